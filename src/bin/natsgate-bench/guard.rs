//! The JetStream guard's cost on the data path (issue 14): the same
//! natsgate configuration with `[jetstream] guard = true` against one
//! without, on ordinary PUB/MSG traffic and request/reply, in alternating
//! rounds. The guard reads only `$JS.` requests, so the figures should
//! agree within the machine's noise.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::client::Auth;
use crate::cpu::Probe;
use crate::load;
use crate::procs::Proc;
use crate::table::percentile;

/// natsgate's config at `config` with the guard turned on, written beside
/// it.
pub fn guarded_config(config: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut toml = std::fs::read_to_string(config)?;
    toml.push_str("\n[jetstream]\nguard = true\n");
    let path = config.with_file_name("natsgate-guard.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// One figure: samples with the guard off and on.
struct Figure {
    name: &'static str,
    unit: &'static str,
    /// Whether more is better (throughput) or worse (latency).
    higher_is_better: bool,
    off: Vec<f64>,
    on: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Measures the guard's figures; returns the lines to print. `off` and `on`
/// are two natsgate processes in front of the same nats-server.
pub fn run(
    rounds: usize,
    measure: Duration,
    off: &Proc,
    on: &Proc,
    auth: &Auth,
) -> Result<Vec<String>, String> {
    let mut figures = [
        Figure {
            name: "publish 128 B",
            unit: "msg/s",
            higher_is_better: true,
            off: vec![],
            on: vec![],
        },
        Figure {
            name: "pub->sub 1 KiB",
            unit: "msg/s",
            higher_is_better: true,
            off: vec![],
            on: vec![],
        },
        Figure {
            name: "req/reply p50",
            unit: "us",
            higher_is_better: false,
            off: vec![],
            on: vec![],
        },
    ];
    fn err(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |e| format!("guard bench, {what}: {e}")
    }
    for round in 0..rounds {
        let mut order = [(false, off), (true, on)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (guarded, proc) in order {
            let addr: SocketAddr = proc.addr;
            let probe = || Probe::new(proc.pid());
            let p = load::publish(addr, auth, probe(), 128, measure).map_err(err("publish"))?;
            let s = load::pub_sub(addr, auth, probe(), 1024, measure).map_err(err("pub->sub"))?;
            let r = load::request_reply(addr, auth, probe(), measure).map_err(err("req/reply"))?;
            let values = [p.rate(), s.rate(), percentile(&r.lat, 0.5)];
            for (figure, value) in figures.iter_mut().zip(values) {
                if guarded {
                    figure.on.push(value);
                } else {
                    figure.off.push(value);
                }
            }
        }
    }
    let mut lines = vec![
        String::new(),
        format!("JetStream guard on ordinary traffic (medians of {rounds} alternating rounds):"),
        format!(
            "  {:<18} {:>12} {:>12} {:<6} {:>7}",
            "figure", "guard off", "guard on", "unit", "on/off"
        ),
    ];
    for f in &figures {
        let (off, on) = (median(&f.off), median(&f.on));
        let ratio = on / off;
        let worse = if f.higher_is_better {
            ratio < 1.0
        } else {
            ratio > 1.0
        };
        lines.push(format!(
            "  {:<18} {:>12.0} {:>12.0} {:<6} {:>7.2}{}",
            f.name,
            off,
            on,
            f.unit,
            ratio,
            if worse { "  (guard slower)" } else { "" }
        ));
    }
    Ok(lines)
}
