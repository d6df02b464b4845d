//! Sorting more than fits in memory: items are sorted in runs of a fixed
//! count, each run beyond the first written to an unnamed temporary file
//! (`TMPDIR`; gone when closed, even after a kill), and the runs merged as
//! the items are taken. Written here rather than taken from a crate: the
//! one maintained for this (`extsort`) builds a README tester and rayon
//! into every build, 14 crates for what is a hundred lines.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

/// An item that can be written to a run and read back.
pub trait Spilled: Sized {
    fn encode(&self, out: &mut impl Write) -> io::Result<()>;

    /// The next item, or `None` at the end of the run.
    fn decode(input: &mut impl Read) -> io::Result<Option<Self>>;
}

/// Items pushed in any order, taken back in `order`; equal items keep the
/// order they were pushed in.
pub struct Sorter<T> {
    run: usize,
    order: fn(&T, &T) -> Ordering,
    buffer: Vec<T>,
    runs: Vec<File>,
}

impl<T: Spilled> Sorter<T> {
    /// Sorts `run` items at a time in memory.
    pub fn new(run: usize, order: fn(&T, &T) -> Ordering) -> Self {
        Self {
            run: run.max(1),
            order,
            buffer: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, item: T) -> io::Result<()> {
        self.buffer.push(item);
        if self.buffer.len() >= self.run {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the buffer, sorted, as a run.
    fn spill(&mut self) -> io::Result<()> {
        self.buffer.sort_by(self.order);
        let mut out = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
        for item in self.buffer.drain(..) {
            item.encode(&mut out)?;
        }
        let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.rewind()?;
        self.runs.push(file);
        Ok(())
    }

    /// The items in order: from memory when they fit in one run, else
    /// merged from the runs as they are taken.
    pub fn sorted(mut self) -> io::Result<Merge<T>> {
        if self.runs.is_empty() {
            self.buffer.sort_by(self.order);
            return Ok(Merge {
                memory: self.buffer.into_iter(),
                runs: Vec::new(),
                heads: BinaryHeap::new(),
            });
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        let mut runs: Vec<BufReader<File>> = (self.runs.into_iter())
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .collect();
        let mut heads = BinaryHeap::with_capacity(runs.len());
        for (run, input) in runs.iter_mut().enumerate() {
            if let Some(item) = T::decode(input)? {
                heads.push(Head {
                    item,
                    run,
                    order: self.order,
                });
            }
        }
        Ok(Merge {
            memory: Vec::new().into_iter(),
            runs,
            heads,
        })
    }
}

/// The next item of one run, ordered so that the heap's top is the least
/// (the earlier run first among equals).
struct Head<T> {
    item: T,
    run: usize,
    order: fn(&T, &T) -> Ordering,
}

impl<T> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.order)(&other.item, &self.item).then(other.run.cmp(&self.run))
    }
}

impl<T> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Head<T> {}

/// A sorter's items in order.
pub struct Merge<T> {
    memory: std::vec::IntoIter<T>,
    runs: Vec<BufReader<File>>,
    heads: BinaryHeap<Head<T>>,
}

impl<T: Spilled> Iterator for Merge<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        if self.runs.is_empty() {
            return self.memory.next().map(Ok);
        }
        let Head { item, run, order } = self.heads.pop()?;
        match T::decode(&mut self.runs[run]) {
            Ok(Some(next)) => self.heads.push(Head {
                item: next,
                run,
                order,
            }),
            Ok(None) => {}
            Err(e) => {
                self.heads.clear();
                return Some(Err(e));
            }
        }
        Some(Ok(item))
    }
}

/// A run that could not be written or read back, naming `what` was being
/// sorted and where (`TMPDIR`).
pub fn failed(e: io::Error, what: &str) -> anyhow::Error {
    anyhow::Error::new(e).context(format!(
        "{what} in runs under {} (TMPDIR: a disk with room for them)",
        std::env::temp_dir().display()
    ))
}

/// Reads exactly `N` bytes; `None` if the input ends before the first.
pub fn take_first<const N: usize>(input: &mut impl Read) -> io::Result<Option<[u8; N]>> {
    let mut bytes = [0; N];
    let mut filled = 0;
    while filled < N {
        match input.read(&mut bytes[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(bytes))
}

/// Reads exactly `N` bytes.
pub fn take<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` after their length.
pub fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads bytes written by [`put_bytes`].
pub fn get_bytes(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = u32::from_le_bytes(take(input)?) as usize;
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A key and the place it was pushed at.
    #[derive(Debug, Clone, PartialEq)]
    struct Item(u16, u32);

    impl Spilled for Item {
        fn encode(&self, out: &mut impl Write) -> io::Result<()> {
            out.write_all(&self.0.to_le_bytes())?;
            out.write_all(&self.1.to_le_bytes())
        }

        fn decode(input: &mut impl Read) -> io::Result<Option<Self>> {
            let Some(key) = take_first(input)? else {
                return Ok(None);
            };
            Ok(Some(Item(
                u16::from_le_bytes(key),
                u32::from_le_bytes(take(input)?),
            )))
        }
    }

    proptest! {
        /// Any keys, any run size: the merge equals a stable sort in memory.
        #[test]
        fn the_merge_of_runs_equals_a_stable_sort(
            keys in prop::collection::vec(0u16..20, 0..400),
            run in 1usize..50,
        ) {
            let items: Vec<Item> = (keys.iter().enumerate())
                .map(|(i, &k)| Item(k, i as u32))
                .collect();
            let mut sorter = Sorter::new(run, |a: &Item, b: &Item| a.0.cmp(&b.0));
            for item in &items {
                sorter.push(item.clone()).unwrap();
            }
            let got: Vec<Item> = sorter.sorted().unwrap().map(Result::unwrap).collect();
            let mut want = items;
            want.sort_by_key(|i| i.0);
            prop_assert_eq!(got, want);
        }
    }

    /// A run cut short on disk is an error, not a shorter history.
    #[test]
    fn a_run_cut_short_is_an_error() {
        let mut bytes = Vec::new();
        Item(1, 2).encode(&mut bytes).unwrap();
        let mut input = &bytes[..bytes.len() - 1];
        assert!(Item::decode(&mut input).is_err());
        let mut empty: &[u8] = &[];
        assert!(Item::decode(&mut empty).unwrap().is_none());
    }
}
