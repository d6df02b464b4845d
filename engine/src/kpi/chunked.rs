//! A vector stored in fixed-size chunks, for the engine's per-device state:
//! it grows by one chunk at a time, so at most one chunk is unused (a `Vec`
//! doubles, and right after doubling half of a 100 MB vector is unused), and
//! growing never copies what is already there.

/// Elements per chunk: 1024 device accumulators are about 100 KB.
const CHUNK: usize = 1024;

/// Indexable, append-only storage in chunks of [`CHUNK`] elements.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Appends `value`, returning its index.
    pub fn push(&mut self, value: T) -> usize {
        let index = self.len;
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            // The first chunk grows as a `Vec` does (a small window stays
            // small); later ones are allocated whole.
            Some(_) => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
            None => self.chunks.push(vec![value]),
        }
        self.len += 1;
        index
    }

    /// The element at `index`.
    pub fn get(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK][index % CHUNK]
    }

    /// The element at `index`, to change.
    pub fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK][index % CHUNK]
    }

    /// Elements stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The elements in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> IntoIterator for Chunked<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    /// The elements in index order.
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_survive_chunk_boundaries() {
        let mut c = Chunked::default();
        for i in 0..2 * CHUNK + 3 {
            assert_eq!(c.push(i), i);
        }
        *c.get_mut(CHUNK) += 1;
        assert_eq!(*c.get(CHUNK), CHUNK + 1);
        assert_eq!(c.len(), 2 * CHUNK + 3);
        assert_eq!(c.chunks[1].capacity(), CHUNK);
        assert_eq!(c.into_iter().filter(|&v| v == CHUNK + 1).count(), 2);
    }
}
