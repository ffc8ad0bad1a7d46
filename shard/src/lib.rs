//! sluice-shard: the thread-per-core runtime (one pinned glommio executor per shard), the
//! partition→shard table, cross-shard rkyv frames over bounded channels, DMA file IO, and the
//! process stop signal. Besides it only the broker glue and the node-to-node transport
//! (`sluice-rpc`: its sockets, timers and task queues) touch glommio.

pub mod bounded;
pub mod clock;
pub mod dma;
pub mod error;
pub mod frame;
pub mod kick;
pub mod mesh;
pub mod runtime;
pub mod shutdown;
pub mod table;

pub use bounded::map_bounded;
pub use dma::{DmaBuf, DmaStorage, DmaStorageFile, READ_LEN_MAX};
pub use error::ShardError;
pub use frame::{Frame, FRAME_BODY_MAX};
pub use mesh::{CallClass, FrameHandler, Mesh};
pub use runtime::{
    allowed_cpus, sleep, start, yield_if_needed, ExecutorTotals, IoTotals, QueueKind, QueueShares,
    QueueTotals, ShardConfig, ShardCtx, ShardRuntime, ShardTask,
};
#[cfg(not(loom))]
pub use shutdown::trigger_on_signals;
pub use shutdown::{Shutdown, ShutdownWait};
pub use table::{assign, fnv1a64, topic_hash, PartitionKey, ShardId, ShardTable, SHARDS_MAX};

pub(crate) use sluice_storage::io::PAGE_SIZE;
