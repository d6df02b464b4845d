//! Ids as dense `u32` indices: window state refers to a device, site or
//! operator by a 4-byte index instead of a 16-byte `Arc<str>` per reference,
//! and hashes the strings once per reading instead of once per window.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use super::chunked::Chunked;
use crate::model::{Id, Usage};

/// Distinct values in arrival order, each with its index. Values are never
/// removed: an index stays valid for the interner's life.
#[derive(Debug, Default)]
pub struct Interner<T> {
    values: Chunked<T>,
    /// Indices into `values`, hashed by value (5 bytes per bucket).
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl<T: Hash> Interner<T> {
    /// The index of the value equal to `key` (by `eq`), adding `make()` under
    /// a new index when there is none. `key` must hash as the value does.
    fn intern<Q: Hash + ?Sized>(
        &mut self,
        key: &Q,
        eq: impl Fn(&T) -> bool,
        make: impl FnOnce() -> T,
    ) -> u32 {
        let hash = self.hasher.hash_one(key);
        let values = &self.values;
        if let Some(&i) = self.index.find(hash, |&i| eq(values.get(i as usize))) {
            return i;
        }
        let i = u32::try_from(self.values.len()).expect("fewer than 2^32 ids");
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(values.get(j as usize)));
        self.values.push(make());
        i
    }

    /// The value of index `i`.
    pub fn get(&self, i: u32) -> &T {
        self.values.get(i as usize)
    }
}

/// The ids one worker's windows refer to. Devices are (customer, device),
/// as everywhere in the engine.
#[derive(Debug, Default)]
pub struct WindowIds {
    devices: Interner<(Id, Id)>,
    sites: Interner<Id>,
    operators: Interner<Id>,
}

impl WindowIds {
    /// The device of a reading.
    pub fn device(&mut self, usage: &Usage) -> u32 {
        self.device_of(&usage.customer, &usage.device)
    }

    /// The device `device` of `customer`.
    pub fn device_of(&mut self, customer: &Id, device: &Id) -> u32 {
        let key = (&**customer, &**device);
        self.devices.intern(
            &key,
            |(c, d)| (&**c, &**d) == key,
            || (customer.clone(), device.clone()),
        )
    }

    /// A site.
    pub fn site(&mut self, site: &Id) -> u32 {
        self.sites.intern(&**site, |s| s == site, || site.clone())
    }

    /// An operator.
    pub fn operator(&mut self, operator: &Id) -> u32 {
        self.operators
            .intern(&**operator, |o| o == operator, || operator.clone())
    }

    /// (customer, device) of device index `i`.
    pub fn device_ids(&self, i: u32) -> &(Id, Id) {
        self.devices.get(i)
    }

    /// The site of index `i`.
    pub fn site_id(&self, i: u32) -> &Id {
        self.sites.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_get_one_index_whatever_their_allocation() {
        let mut ids = WindowIds::default();
        let a = ids.site(&"north".into());
        let b = ids.site(&"south".into());
        assert_eq!(ids.site(&"north".into()), a);
        assert_ne!(a, b);
        assert_eq!(&**ids.site_id(b), "south");
        // An operator and a site of the same name are different ids.
        assert_eq!(ids.operator(&"north".into()), 0);
        assert_eq!(ids.sites.values.len(), 2);
    }
}
