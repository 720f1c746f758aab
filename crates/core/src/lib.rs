//! Sans-IO core of paas-runner: every decision, no IO, no clock, no randomness.

pub mod flavor;
pub mod secret;

pub use flavor::{weight_of_ram_mib, Flavor, FlavorTable};
pub use secret::Secret;
