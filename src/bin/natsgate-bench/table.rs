//! The figures: one [`Row`] per figure with samples per configuration, the
//! medians, the ratios to direct and relay, and the targets.

use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Config {
    Direct,
    Relay,
    Gate,
}

pub const CONFIGS: [Config; 3] = [Config::Direct, Config::Relay, Config::Gate];

/// The configuration order for a round: rotated, so none always goes first.
pub fn rotated(round: usize) -> [Config; 3] {
    let mut order = CONFIGS;
    order.rotate_left(round % 3);
    order
}

/// One row of the table: samples per configuration.
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    samples: [Vec<f64>; 3],
    target: Target,
}

#[derive(Clone, Copy)]
pub enum Target {
    /// natsgate/direct at least this.
    VsDirectMin(f64),
    /// natsgate/relay at least this.
    VsRelayMin(f64),
    /// natsgate/relay at most this.
    VsRelayMax(f64),
    /// natsgate's own value at most this.
    AbsMax(f64),
    /// Shown for information; no target.
    Info,
}

impl Row {
    pub fn new(name: impl Into<String>, unit: &'static str, target: Target) -> Row {
        Row {
            name: name.into(),
            unit,
            samples: [Vec::new(), Vec::new(), Vec::new()],
            target,
        }
    }

    pub fn push(&mut self, config: Config, value: f64) {
        self.samples[config as usize].push(value);
    }

    /// Pushes `value` when there is one (a CPU time that could be read).
    pub fn push_some(&mut self, config: Config, value: Option<f64>) {
        if let Some(v) = value {
            self.push(config, v);
        }
    }

    pub fn median(&self, config: Config) -> Option<f64> {
        median(&self.samples[config as usize])
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// The `p` quantile (0..=1) of `sorted`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One line per finished figure while the bench runs.
pub fn progress(row: &Row, started: Instant) {
    let f = |c| {
        row.median(c)
            .map_or("-".to_owned(), |v| fmt_value(v, row.unit))
    };
    println!(
        "  [{:>4.0} s] {:<26} direct {:>10}  relay {:>10}  natsgate {:>10}",
        started.elapsed().as_secs_f64(),
        row.name,
        f(Config::Direct),
        f(Config::Relay),
        f(Config::Gate)
    );
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" | "conn/s" if v >= 1e6 => format!("{:.2}M", v / 1e6),
        "msg/s" | "conn/s" if v >= 1e3 => format!("{:.1}k", v / 1e3),
        "msg/s" | "conn/s" | "ns" => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<26} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16} met",
        "figure", "unit", "direct", "relay", "natsgate", "gate/dir", "gate/relay", "target"
    );
    println!("{}", "-".repeat(112));
    for row in rows {
        let d = row.median(Config::Direct);
        let r = row.median(Config::Relay);
        let g = row.median(Config::Gate);
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| fmt_value(v, row.unit));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let gd = ratio(g, d);
        let gr = ratio(g, r);
        let (target, met) = match row.target {
            Target::VsDirectMin(t) => (format!(">= {t} x direct"), gd.map(|x| x >= t)),
            Target::VsRelayMin(t) => (format!(">= {t} x relay"), gr.map(|x| x >= t)),
            Target::VsRelayMax(t) => (format!("<= {t} x relay"), gr.map(|x| x <= t)),
            Target::AbsMax(t) => (format!("<= {t} {}", row.unit), g.map(|x| x <= t)),
            Target::Info => ("-".to_owned(), None),
        };
        let fr = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<26} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16} {}",
            row.name,
            row.unit,
            cell(d),
            cell(r),
            cell(g),
            fr(gd),
            fr(gr),
            target,
            match met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
    println!(
        "\nmedians of the rounds; \"direct\" is nats-server in operator mode with the same \
         JWT user and its permissions (unless --direct plain), and for JWT connects the same \
         JWTs; memory is RSS growth per idle client of a fresh process \
         (direct: nats-server, relay: the relay process), \"memory upstream\" that of the \
         fresh nats-server behind it; cpu/msg is the user+system CPU time \
         (/proc/<pid>/stat, all threads) of nats-server (direct), the relay process or \
         natsgate during the measurement, per message moved (many clients: per delivery), \
         cpu/round trip per request/reply round trip; \"machine busy, paced\" is the \
         share of all cores in use (every process) during the paced many-clients run: \
         near 100 %, its latencies are mostly waiting for a CPU."
    );
}
