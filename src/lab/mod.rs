//! Rehearsal labs on libvirt: a definition ([`definition`]), the accelerator ([`accel`]), libvirt
//! XML with kubedrill's ownership mark ([`xml`]), the operations on the hypervisor
//! ([`hypervisor`]) and the local record of what was created ([`state`]).

pub mod accel;
pub mod definition;
pub mod hypervisor;
pub mod lifecycle;
pub mod seed;
pub mod state;
pub mod storage;
pub mod xml;

pub use definition::{Lab, LabError, VmSpec};
