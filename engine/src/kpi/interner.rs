//! Ids as dense `u32` indices: window state refers to a device, site or
//! operator by a 4-byte index instead of a 16-byte `Arc<str>` per reference,
//! and hashes the strings once per reading instead of once per window.

use std::sync::Arc;

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
///
/// A batch's readings come one after another with the same `Arc`s of
/// customer, device and (mostly) operator, so the last device and operator
/// looked up are kept (holding their `Arc`s, so an address is never
/// another string's): the same allocation again is answered without
/// hashing the strings.
#[derive(Debug, Default)]
pub struct WindowIds {
    devices: DeviceMap<()>,
    sites: Interner,
    operators: Interner,
    last_device: Option<(Id, Id, u32)>,
    last_operator: Option<(Id, u32)>,
}

impl WindowIds {
    /// The device of a reading.
    pub fn device(&mut self, usage: &Usage) -> u32 {
        self.device_of(&usage.customer, &usage.device)
    }

    /// The device `device` of `customer`.
    pub fn device_of(&mut self, customer: &Id, device: &Id) -> u32 {
        if let Some((c, d, i)) = &self.last_device
            && Arc::ptr_eq(c, customer)
            && Arc::ptr_eq(d, device)
        {
            return *i;
        }
        let i = self.devices.index_or_insert_with(customer, device, || ());
        self.last_device = Some((customer.clone(), device.clone(), i));
        i
    }

    /// A site.
    pub fn site(&mut self, site: &Id) -> u32 {
        self.sites.intern(site)
    }

    /// An operator.
    pub fn operator(&mut self, operator: &Id) -> u32 {
        if let Some((o, i)) = &self.last_operator
            && Arc::ptr_eq(o, operator)
        {
            return *i;
        }
        let i = self.operators.intern(operator);
        self.last_operator = Some((operator.clone(), i));
        i
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

    /// The last device and operator are answered from the same allocation
    /// only; other allocations of the same strings get the same indices,
    /// different strings other ones.
    #[test]
    fn the_last_ids_answer_only_for_their_own_strings() {
        let mut ids = WindowIds::default();
        let (acme, other): (Id, Id) = ("acme".into(), "other".into());
        let (m1, m2): (Id, Id) = ("m1".into(), "m2".into());
        let a = ids.device_of(&acme, &m1);
        assert_eq!(ids.device_of(&acme, &m1), a);
        assert_eq!(ids.device_of(&"acme".into(), &"m1".into()), a);
        let b = ids.device_of(&acme, &m2);
        let c = ids.device_of(&other, &m1);
        assert_eq!([a, b, c], [0, 1, 2]);
        assert_eq!(ids.device_of(&acme, &m1), a);
        assert_eq!(ids.device_ids(c), &(other.clone(), m1.clone()));
        let (ann, bob): (Id, Id) = ("ann".into(), "bob".into());
        assert_eq!(ids.operator(&ann), 0);
        assert_eq!(ids.operator(&ann), 0);
        assert_eq!(ids.operator(&bob), 1);
        assert_eq!(ids.operator(&"ann".into()), 0);
        assert_eq!(ids.operator(&bob), 1);
    }
}
