//! Connections to the archive's day files, the most recently used few
//! kept open. A backfill of a year touches 365 day files; each open one
//! holds three descriptors (the file, its log, its shared memory) and a
//! page cache of up to 2 MB. Kept open all at once, a 350-day history
//! under systemd's default limit of 1,024 descriptors stopped the service
//! with "Too many open files" (intake paused, checkpoint and passes
//! failing), and a 90-day one held some 400 MB of page caches.

use std::collections::BTreeMap;

use rusqlite::Connection;

/// Day files open at once, per archive and per pass reader: the live
/// telemetry's days and the horizon's, with room for a backfill's.
pub const MAX_OPEN_DAYS: usize = 16;

/// Open day files by UTC day, closed least recently used first.
#[derive(Default)]
pub struct OpenDays {
    open: BTreeMap<u64, (Connection, u64)>,
    /// Counts uses: the latest use of each file.
    uses: u64,
}

impl OpenDays {
    /// The day's connection, opened with `open` if it is not open; the
    /// least recently used is closed first when [`MAX_OPEN_DAYS`] are.
    pub fn get<E>(
        &mut self,
        day: u64,
        open: impl FnOnce() -> Result<Connection, E>,
    ) -> Result<&mut Connection, E> {
        self.uses += 1;
        if !self.open.contains_key(&day) {
            let conn = open()?;
            if self.open.len() >= MAX_OPEN_DAYS {
                let oldest = (self.open.iter())
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(d, _)| *d);
                if let Some(oldest) = oldest {
                    self.open.remove(&oldest);
                }
            }
            self.open.insert(day, (conn, 0));
        }
        let (conn, used) = self.open.get_mut(&day).expect("opened above");
        *used = self.uses;
        Ok(conn)
    }

    /// Closes the day's file, if open.
    pub fn close(&mut self, day: u64) {
        self.open.remove(&day);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many days are used, at most [`MAX_OPEN_DAYS`] stay open, the
    /// least recently used closed first.
    #[test]
    fn the_least_recently_used_day_is_closed_past_the_limit() {
        let mut days = OpenDays::default();
        let mut opened = Vec::new();
        let mut use_day = |days: &mut OpenDays, day: u64| {
            days.get(day, || {
                opened.push(day);
                Connection::open_in_memory()
            })
            .unwrap();
        };
        for day in 0..MAX_OPEN_DAYS as u64 {
            use_day(&mut days, day);
        }
        use_day(&mut days, 0); // day 0 is now the most recent
        use_day(&mut days, 100); // closes day 1
        use_day(&mut days, 0);
        use_day(&mut days, 1); // opened again; closes day 2
        assert_eq!(days.len(), MAX_OPEN_DAYS);
        for day in 300..1_000 {
            use_day(&mut days, day);
        }
        assert_eq!(days.len(), MAX_OPEN_DAYS);
        assert_eq!(opened[MAX_OPEN_DAYS..MAX_OPEN_DAYS + 2], [100, 1]);
    }
}
