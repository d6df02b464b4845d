//! CPU time and peak memory of a process, from Linux's /proc (no libc).

/// Clock ticks per second of the CPU times in /proc/*/stat. Linux reports
/// them in USER_HZ, which is 100 on every architecture fleetpulse runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `pid` (`"self"` for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_from_stat(&stat, false)
}

/// User + system CPU seconds in a /proc/*/stat line; with `children`, the
/// waited-for children's (cutime + cstime) instead.
pub fn cpu_from_stat(stat: &str, children: bool) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15,
    // cutime 16, cstime 17.
    let (a, b) = if children { (13, 14) } else { (11, 12) };
    let user: f64 = fields.get(a)?.parse().ok()?;
    let system: f64 = fields.get(b)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SEC)
}

/// Peak resident set size of `pid` in bytes (VmHWM).
pub fn peak_rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_fields_after_the_command_name() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0";
        assert_eq!(cpu_from_stat(stat, false), Some(3.0));
        assert_eq!(cpu_from_stat(stat, true), Some(0.1));
        assert!(cpu_seconds("self").is_some());
        assert!(peak_rss_bytes("self").unwrap() > 0);
    }
}
