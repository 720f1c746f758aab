//! Flavors (VM sizes) and their weights in the quota.

use std::collections::BTreeMap;

/// One flavor a runner can request, as the cloud's catalogue describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Flavor {
    /// Short name users give in `CI_CLEVER_CLOUD_FLAVOR`, e.g. `M`.
    pub name: String,
    /// Name the cloud API expects, e.g. `heptapod-runner-M`.
    pub api_name: String,
    pub ram_mib: u64,
    pub cpus: u32,
}

impl Flavor {
    /// Weight of this flavor in the quota: (RAM in GiB) ^ 1.25.
    ///
    /// The non-linearity favours small machines: a flavor with 16 times the
    /// RAM of another counts as much as 32 of the smaller one.
    pub fn weight(&self) -> f64 {
        weight_of_ram_mib(self.ram_mib)
    }
}

/// Weight of a machine with `ram_mib` MiB of RAM.
pub fn weight_of_ram_mib(ram_mib: u64) -> f64 {
    (ram_mib as f64 / 1024.0).powf(1.25)
}

/// The flavors a runner may use, keyed by short name, with its limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlavorTable {
    /// Available flavors, by short name (`XS`, `S`, `M`, ...).
    pub flavors: BTreeMap<String, Flavor>,
}

impl FlavorTable {
    pub fn new(flavors: impl IntoIterator<Item = Flavor>) -> Self {
        FlavorTable {
            flavors: flavors.into_iter().map(|f| (f.name.clone(), f)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Flavor> {
        self.flavors.get(name)
    }

    /// Names sorted by weight, smallest first (for messages to users).
    pub fn names_by_weight(&self) -> Vec<String> {
        let mut flavors: Vec<&Flavor> = self.flavors.values().collect();
        flavors.sort_by(|a, b| a.weight().total_cmp(&b.weight()).then(a.name.cmp(&b.name)));
        flavors.into_iter().map(|f| f.name.clone()).collect()
    }

    /// Names of the flavors whose weight does not exceed `max_weight`,
    /// smallest first.
    pub fn names_up_to(&self, max_weight: f64) -> Vec<String> {
        self.names_by_weight()
            .into_iter()
            .filter(|name| self.flavors[name].weight() <= max_weight + 1e-9)
            .collect()
    }

    pub fn max_weight(&self) -> Option<f64> {
        self.flavors.values().map(Flavor::weight).reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(name: &str, ram_mib: u64) -> Flavor {
        Flavor {
            name: name.into(),
            api_name: format!("heptapod-runner-{name}"),
            ram_mib,
            cpus: 1,
        }
    }

    #[test]
    fn weights_follow_ram_to_the_power_1_25() {
        assert!((flavor("M", 8192).weight() - 8f64.powf(1.25)).abs() < 1e-9);
        assert!((flavor("XS", 1024).weight() - 1.0).abs() < 1e-9);
        // 16 times the RAM counts as 32 of the small one.
        assert!((flavor("L", 16384).weight() - 32.0).abs() < 1e-9);
    }

    #[test]
    fn names_sorted_by_weight() {
        let table = FlavorTable::new([flavor("M", 8192), flavor("XS", 1024), flavor("S", 4096)]);
        assert_eq!(table.names_by_weight(), ["XS", "S", "M"]);
        assert_eq!(table.names_up_to(flavor("S", 4096).weight()), ["XS", "S"]);
    }
}
