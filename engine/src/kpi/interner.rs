//! Ids as dense `u32` indices: window state refers to a device, site or
//! operator by a 4-byte index instead of a 16-byte `Arc<str>` per reference,
//! and hashes the strings once per reading instead of once per window.

use crate::device_map::DeviceMap;
use crate::model::{Id, Usage};

/// Distinct ids in arrival order, each with its index; for the few ids many
/// devices share (sites, operators). Ids are never removed.
#[derive(Debug, Default)]
struct Interner {
    values: Vec<Id>,
    index: foldhash::HashMap<Id, u32>,
}

impl Interner {
    /// The index of `id`, adding it under a new one when it is new.
    fn intern(&mut self, id: &Id) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = u32::try_from(self.values.len()).expect("fewer than 2^32 ids");
        self.values.push(id.clone());
        self.index.insert(id.clone(), i);
        i
    }

    /// The id of index `i`.
    fn get(&self, i: u32) -> &Id {
        &self.values[i as usize]
    }
}

/// The ids one worker's windows refer to. Devices are (customer, device),
/// as everywhere in the engine.
#[derive(Debug, Default)]
pub struct WindowIds {
    devices: DeviceMap<()>,
    sites: Interner,
    operators: Interner,
}

impl WindowIds {
    /// The device of a reading.
    pub fn device(&mut self, usage: &Usage) -> u32 {
        self.device_of(&usage.customer, &usage.device)
    }

    /// The device `device` of `customer`.
    pub fn device_of(&mut self, customer: &Id, device: &Id) -> u32 {
        self.devices.index_or_insert_with(customer, device, || ())
    }

    /// A site.
    pub fn site(&mut self, site: &Id) -> u32 {
        self.sites.intern(site)
    }

    /// An operator.
    pub fn operator(&mut self, operator: &Id) -> u32 {
        self.operators.intern(operator)
    }

    /// (customer, device) of device index `i`.
    pub fn device_ids(&self, i: u32) -> &(Id, Id) {
        self.devices.key(i)
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
