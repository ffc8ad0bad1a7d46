//! Hand-written SVG plots of a run (no plotting crate: three panels of polylines are little
//! code): latency percentiles over time, throughput over time, and throughput vs latency.

use std::fmt::Write as _;

use super::run::RunResult;

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const GAP: f64 = 70.0;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

struct Panel<'a> {
    title: &'a str,
    xlabel: &'a str,
    ylabel: &'a str,
    log_y: bool,
    /// Draw markers at each point (scatter/curve) rather than a bare line.
    markers: bool,
    series: Vec<Series<'a>>,
    /// Vertical markers: (x, label).
    marks: Vec<(f64, String)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 && out.len() < 50 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn panel(out: &mut String, y0: f64, p: &Panel) {
    let (x0, pw, ph) = (LEFT, W - LEFT - RIGHT, PANEL_H);
    let pts = p
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!p.log_y || *y > 0.0));
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        y0 - 12.0,
        esc(p.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>"##
    );
    if xmin > xmax {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="13">no data</text>"#,
            x0 + pw / 2.0 - 25.0,
            y0 + ph / 2.0
        );
        return;
    }
    if p.markers {
        // Scatter: start the axes at zero so the curve's shape reads honestly.
        xmin = xmin.min(0.0);
    }
    if xmax - xmin < 1e-9 {
        xmax = xmin + 1.0;
    }
    let (ylo, yhi) = if p.log_y {
        let lo = 10f64.powf(ymin.log10().floor());
        let hi = 10f64.powf(ymax.log10().ceil().max(lo.log10() + 1.0));
        (lo.log10(), hi.log10())
    } else {
        (0.0f64.min(ymin), if ymax > 0.0 { ymax * 1.1 } else { 1.0 })
    };
    let sx = |x: f64| x0 + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| {
        let v = if p.log_y { y.max(1e-12).log10() } else { y };
        y0 + ph - (v - ylo) / (yhi - ylo) * ph
    };
    // Grid and tick labels.
    let yticks: Vec<f64> = if p.log_y {
        (ylo as i32..=yhi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        nice_ticks(ylo, yhi, 5)
    };
    for t in yticks {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 + pw,
            x0 - 5.0,
            y + 4.0,
            fmt_num(t)
        );
    }
    for t in nice_ticks(xmin, xmax, 8) {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            y0 + ph,
            y0 + ph + 15.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 32.0,
        esc(p.xlabel)
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        x0 - 50.0,
        y0 + ph / 2.0,
        x0 - 50.0,
        y0 + ph / 2.0,
        esc(p.ylabel)
    );
    for (x, label) in &p.marks {
        if *x < xmin || *x > xmax {
            continue;
        }
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{y0}" x2="{0:.1}" y2="{1:.1}" stroke="#888" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3:.1}" font-size="10" fill="#555">{4}</text>"##,
            sx(*x),
            y0 + ph,
            sx(*x) + 3.0,
            y0 + 12.0,
            esc(label)
        );
    }
    for (i, s) in p.series.iter().enumerate() {
        let good: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!p.log_y || *y > 0.0))
            .collect();
        if !good.is_empty() {
            let path: Vec<String> = good
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                s.color,
                path.join(" ")
            );
            if p.markers {
                for (x, y) in &good {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                        sx(*x),
                        sy(*y),
                        s.color
                    );
                }
            }
        }
        let ly = y0 + 10.0 + i as f64 * 18.0;
        let lx = x0 + pw + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            lx + 20.0,
            s.color,
            lx + 26.0,
            ly + 4.0,
            esc(s.name)
        );
    }
}

pub fn svg(r: &RunResult) -> String {
    let ser = &r.series;
    let col = |f: fn(&super::run::Second) -> f64| -> Vec<(f64, f64)> {
        ser.iter().map(|s| (s.t_s, f(s))).collect()
    };
    // Phase boundaries, where the label changes.
    let mut marks = Vec::new();
    let mut last = "";
    for s in ser {
        if s.phase != last {
            marks.push(((s.t_s - 1.0).max(0.0), s.phase.clone()));
            last = &s.phase;
        }
    }
    let lat = Panel {
        title: "Latency percentiles per second (ms, log scale)",
        xlabel: "seconds since start",
        ylabel: "ms",
        log_y: true,
        markers: false,
        series: vec![
            Series {
                name: "produce p50",
                color: "#2b8cbe",
                points: col(|s| s.produce_p50_ms),
            },
            Series {
                name: "produce p99",
                color: "#e6550d",
                points: col(|s| s.produce_p99_ms),
            },
            Series {
                name: "produce p99.9",
                color: "#a63603",
                points: col(|s| s.produce_p999_ms),
            },
            Series {
                name: "e2e p50",
                color: "#74c476",
                points: col(|s| s.e2e_p50_ms),
            },
            Series {
                name: "e2e p99",
                color: "#238b45",
                points: col(|s| s.e2e_p99_ms),
            },
            Series {
                name: "e2e p99.9",
                color: "#00441b",
                points: col(|s| s.e2e_p999_ms),
            },
        ],
        marks: marks.clone(),
    };
    let thr = Panel {
        title: "Throughput per second (records/s)",
        xlabel: "seconds since start",
        ylabel: "records/s",
        log_y: false,
        markers: false,
        series: vec![
            Series {
                name: "produced (acked)",
                color: "#3182bd",
                points: col(|s| s.produce_rps),
            },
            Series {
                name: "consumed",
                color: "#31a354",
                points: col(|s| s.consume_rps),
            },
        ],
        marks,
    };
    let mut phases: Vec<_> = r.phases.iter().collect();
    phases.sort_by(|a, b| a.produce.records_per_s.total_cmp(&b.produce.records_per_s));
    let pt = |f: fn(&super::run::PhaseResult) -> f64| -> Vec<(f64, f64)> {
        phases
            .iter()
            .map(|p| (p.produce.records_per_s, f(p)))
            .collect()
    };
    let curve = Panel {
        title: "Throughput vs latency (one point per measured phase)",
        xlabel: "produce records/s (achieved)",
        ylabel: "ms",
        log_y: true,
        markers: true,
        series: vec![
            Series {
                name: "produce p50",
                color: "#2b8cbe",
                points: pt(|p| p.produce_latency.p50_ms),
            },
            Series {
                name: "produce p99",
                color: "#e6550d",
                points: pt(|p| p.produce_latency.p99_ms),
            },
            Series {
                name: "produce p99.9",
                color: "#a63603",
                points: pt(|p| p.produce_latency.p999_ms),
            },
            Series {
                name: "e2e p99",
                color: "#238b45",
                points: pt(|p| p.e2e_latency.p99_ms),
            },
        ],
        marks: Vec::new(),
    };
    let h = TOP + 3.0 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="13">{}</text>"#,
        esc(&format!(
            "sluice-bench {} → {} · {}",
            r.workload.name, r.bootstrap, r.host.cpu_note
        )
        .chars()
        .take(150)
        .collect::<String>())
    );
    panel(&mut out, TOP + 20.0, &lat);
    panel(&mut out, TOP + 20.0 + PANEL_H + GAP, &thr);
    panel(&mut out, TOP + 20.0 + 2.0 * (PANEL_H + GAP), &curve);
    out.push_str("</svg>\n");
    out
}
