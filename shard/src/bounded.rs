//! Many futures of one task run at once, at most `limit` in flight, their outputs in input
//! order: for start-up work that is mostly waiting (thousands of partition logs opening,
//! each a chain of file operations), so the waits overlap instead of adding up.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Runs `f` on every item, at most `limit` (at least 1) at a time, and returns the outputs
/// in the items' order. All of it runs inside the calling task: no spawning, so `f`'s
/// futures may borrow.
pub async fn map_bounded<I, F, Fut>(items: I, limit: usize, mut f: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    let limit = limit.max(1);
    let mut pending = items.into_iter().enumerate();
    let mut running: Vec<(usize, Pin<Box<Fut>>)> = Vec::new();
    let mut done: Vec<Option<Fut::Output>> = Vec::new();
    let mut exhausted = false;
    std::future::poll_fn(|cx| {
        while !exhausted && running.len() < limit {
            match pending.next() {
                Some((i, item)) => running.push((i, Box::pin(f(item)))),
                None => exhausted = true,
            }
        }
        let mut finished = false;
        let mut k = 0;
        while k < running.len() {
            if let Poll::Ready(out) = running[k].1.as_mut().poll(cx) {
                let (i, _) = running.swap_remove(k);
                if done.len() <= i {
                    done.resize_with(i + 1, || None);
                }
                done[i] = Some(out);
                finished = true;
            } else {
                k += 1;
            }
        }
        if running.is_empty() && exhausted {
            return Poll::Ready(());
        }
        if finished {
            // Start the next ones at the next poll, after the executor's other tasks had
            // their turn (a long list must not hold the shard in one poll).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every item ran to its end"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn outputs_keep_input_order_and_the_limit_holds() {
        let running = Cell::new(0usize);
        let peak = Cell::new(0usize);
        let out = futures_lite::future::block_on(map_bounded(0..20u32, 3, |i| {
            let (running, peak) = (&running, &peak);
            async move {
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                // Later items finish first within a window: order must come from the index.
                for _ in 0..(20 - i) % 4 {
                    futures_lite::future::yield_now().await;
                }
                running.set(running.get() - 1);
                i * 10
            }
        }));
        assert_eq!(out, (0..20).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
    }

    #[test]
    fn no_items_and_a_zero_limit() {
        let out: Vec<u8> =
            futures_lite::future::block_on(map_bounded(Vec::<u8>::new(), 4, |x| async move { x }));
        assert!(out.is_empty());
        let out = futures_lite::future::block_on(map_bounded([1, 2], 0, |x| async move { x + 1 }));
        assert_eq!(out, vec![2, 3]);
    }
}
