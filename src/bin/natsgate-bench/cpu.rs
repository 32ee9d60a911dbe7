//! CPU time of a process under test, from `/proc/<pid>/stat`: user plus
//! system time of all its threads (live and exited), in clock ticks.

use std::sync::OnceLock;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, usually 100).
pub fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    })
}

/// User plus system CPU time of `pid` so far, in seconds; `None` when the
/// process is gone or the file cannot be parsed.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name, is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state); utime is field 14, stime 15.
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second())
}

/// The process whose CPU time a measurement reports.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pid: u32,
}

impl Probe {
    pub fn new(pid: u32) -> Probe {
        Probe { pid }
    }

    /// Starts a span: the CPU time now.
    pub fn start(self) -> Span {
        Span {
            pid: self.pid,
            at: cpu_seconds(self.pid),
        }
    }
}

/// CPU time of one process since [`Probe::start`].
pub struct Span {
    pid: u32,
    at: Option<f64>,
}

impl Span {
    /// Seconds of CPU the process used since the span started.
    pub fn stop(&self) -> Option<f64> {
        Some((cpu_seconds(self.pid)? - self.at?).max(0.0))
    }
}

/// The machine's busy and total CPU time so far, in clock ticks summed over
/// all cores (the `cpu` line of `/proc/stat`; idle and iowait are not busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// How busy the whole machine (every process, all cores) is over a span.
pub struct MachineSpan(Option<(u64, u64)>);

impl MachineSpan {
    pub fn start() -> MachineSpan {
        MachineSpan(machine_ticks())
    }

    /// The busy share of all cores since the start, in percent.
    pub fn stop(&self) -> Option<f64> {
        let (b0, t0) = self.0?;
        let (b1, t1) = machine_ticks()?;
        (t1 > t0).then(|| (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let pid = std::process::id();
        let span = Probe::new(pid).start();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(span.stop().is_some());
        assert!(cpu_seconds(pid).is_some());
        let busy = MachineSpan::start();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(busy.stop().is_none_or(|b| (0.0..=100.0).contains(&b)));
    }
}
