//! The simulated Clever Cloud product catalogue: flavors (`/v2/products/flavors`)
//! and runtime offers (`/v2/products/instances`), shaped as in
//! `reference/clever-cloud-api.md` §3.

use serde_json::{json, Value};

/// The Docker offer's version in a fresh simulator. Real versions are
/// date-like strings that change over time (reference §3.2, pitfall 2).
pub const DEFAULT_DOCKER_VERSION: &str = "20240101";

/// Variant id of the public Docker offer in the simulated catalogue.
pub const DOCKER_VARIANT_ID: &str = "d8c1bd6e-0f2d-4a6e-9b43-3f9f2c1c7a11";

/// The Heptapod Runner variant UUID the reference runner sends by default
/// (`cc_instance_variant_uuid`, reference §3.4).
pub const HEPTAPOD_RUNNER_VARIANT_ID: &str = "70d676a0-a775-4dc9-a43d-3121036e8515";

/// Flavor used when a create request names neither `minFlavor` nor
/// `maxFlavor`. UNVERIFIED: what Clever Cloud picks then is undocumented;
/// the Heptapod docs only say the hosted runner's default flavor is `M`.
pub const DEFAULT_FLAVOR_NAME: &str = "heptapod-runner-M";

/// One entry of the flavor catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFlavor {
    /// Name as the API spells it, e.g. `heptapod-runner-M` or `pico`.
    pub name: String,
    /// RAM in MiB (the `mem` field).
    pub mem_mib: u64,
    pub cpus: u32,
    pub gpus: u32,
    /// Only available flavors may be requested at creation.
    pub available: bool,
    pub microservice: bool,
    /// Price per hour in euros; informative only.
    pub price: f64,
}

impl SimFlavor {
    /// A flavor with the usual defaults: available, no GPU, not a microservice.
    pub fn new(name: &str, cpus: u32, mem_mib: u64) -> SimFlavor {
        SimFlavor {
            name: name.to_owned(),
            mem_mib,
            cpus,
            gpus: 0,
            available: true,
            microservice: false,
            // A made-up linear price, enough for capacity-planning demos.
            price: (mem_mib as f64 / 1024.0) * 0.0115,
        }
    }

    /// The default catalogue: the `heptapod-runner` context (XS to 3XL
    /// available, 4XL listed but unavailable, as the reference runner's tests
    /// record), one entry of another runner context and two plain flavors,
    /// so that clients must filter by prefix and `available` (reference §3.1).
    pub fn default_catalogue() -> Vec<SimFlavor> {
        let mut four_xl = SimFlavor::new("heptapod-runner-4XL", 32, 262144);
        four_xl.available = false;
        let mut pico = SimFlavor::new("pico", 1, 256);
        pico.microservice = true;
        vec![
            pico,
            SimFlavor::new("nano", 1, 512),
            SimFlavor::new("heptapod-runner-XS", 1, 1024),
            SimFlavor::new("heptapod-runner-S", 2, 4096),
            SimFlavor::new("heptapod-runner-M", 4, 8192),
            SimFlavor::new("heptapod-runner-L", 8, 16384),
            SimFlavor::new("heptapod-runner-XL", 12, 32768),
            SimFlavor::new("heptapod-runner-2XL", 16, 65536),
            SimFlavor::new("heptapod-runner-3XL", 24, 131072),
            four_xl,
            SimFlavor::new("jenkins-runner-XL", 12, 32768),
        ]
    }

    /// Weight of this flavor in a weighted quota: (RAM in GiB) ^ 1.25.
    pub fn weight(&self) -> f64 {
        paas_core::weight_of_ram_mib(self.mem_mib)
    }

    /// The raw API representation (reference §3.1). `memory.value` is a
    /// string of bytes, as a comment of the reference runner quotes it.
    pub fn to_json(&self) -> Value {
        let bytes = self.mem_mib * 1024 * 1024;
        let formatted = if self.mem_mib >= 1024 && self.mem_mib.is_multiple_of(1024) {
            format!("{} GiB", self.mem_mib / 1024)
        } else {
            format!("{} MiB", self.mem_mib)
        };
        json!({
            "name": self.name,
            "mem": self.mem_mib,
            "cpus": self.cpus,
            "gpus": self.gpus,
            // UNVERIFIED: the unit and typical value of `disk` are unknown.
            "disk": 0,
            "price": self.price,
            "price_id": format!("{}.price", self.name),
            "available": self.available,
            "microservice": self.microservice,
            "machine_learning": false,
            "nice": if self.microservice { 5 } else { 0 },
            "memory": {"unit": "B", "value": bytes.to_string(), "formatted": formatted},
        })
    }
}

/// The `variant` object of an instance offer or of an application.
pub(crate) fn variant_json(variant_id: &str) -> Value {
    if variant_id == HEPTAPOD_RUNNER_VARIANT_ID {
        // UNVERIFIED: slug and logo of the Heptapod variant; the Clever docs
        // only say such apps show as "Heptapod Docker Runner".
        json!({
            "id": HEPTAPOD_RUNNER_VARIANT_ID,
            "slug": "heptapod-runner",
            "name": "Heptapod Docker Runner",
            "deployType": "docker",
            "logo": "https://assets.clever-cloud.com/logos/heptapod.svg",
        })
    } else {
        json!({
            "id": DOCKER_VARIANT_ID,
            "slug": "docker",
            "name": "Docker",
            "deployType": "docker",
            "logo": "https://assets.clever-cloud.com/logos/docker.svg",
        })
    }
}

/// Whether a create request may name this variant. UNVERIFIED whether any
/// organisation may use the Heptapod variant; the simulator accepts it, as
/// the reference runner needs it, but does not list it among the offers
/// (whether Clever lists it is unverified too, reference §3.4).
pub(crate) fn variant_is_known(variant_id: &str) -> bool {
    variant_id == DOCKER_VARIANT_ID || variant_id == HEPTAPOD_RUNNER_VARIANT_ID
}

/// Body of `GET /v2/products/instances`: the Docker offer first, then two
/// other runtimes, so that clients must pick by `name` or `variant.slug`.
pub(crate) fn instances_json(docker_version: &str, flavors: &[SimFlavor]) -> Value {
    let plain: Vec<Value> = flavors
        .iter()
        .filter(|flavor| !flavor.name.contains("-runner-"))
        .map(SimFlavor::to_json)
        .collect();
    let default_flavor = plain.last().cloned().unwrap_or(Value::Null);
    let offer = |kind: &str, version: &str, name: &str, variant: Value| {
        json!({
            "type": kind,
            "version": version,
            "name": name,
            "variant": variant,
            "description": format!("{name} runtime"),
            "enabled": true,
            "comingSoon": false,
            "maxInstances": 40,
            "tags": [kind],
            "deployments": ["git"],
            "flavors": plain,
            "defaultFlavor": default_flavor,
            "buildFlavor": default_flavor,
        })
    };
    json!([
        offer(
            "docker",
            docker_version,
            "Docker",
            variant_json(DOCKER_VARIANT_ID)
        ),
        offer(
            "node",
            "20231201",
            "Node",
            json!({"id": "3f4b8c2a-5d1e-4f6a-8b7c-9d0e1f2a3b4c", "slug": "node",
                   "name": "Node", "deployType": "node",
                   "logo": "https://assets.clever-cloud.com/logos/nodejs.svg"}),
        ),
        offer(
            "python",
            "20231201",
            "Python",
            json!({"id": "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", "slug": "python",
                   "name": "Python", "deployType": "python",
                   "logo": "https://assets.clever-cloud.com/logos/python.svg"}),
        ),
    ])
}

/// Zones a create request may name (those `clever-tools` 4.11 knows,
/// reference §3.3).
pub(crate) const KNOWN_ZONES: &[&str] = &[
    "par", "parhds", "grahds", "rbx", "rbxhds", "scw", "ldn", "mtl", "sgp", "syd", "wsw",
];
