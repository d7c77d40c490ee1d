//! The lab's storage on the hypervisor: one libvirt `dir` storage pool per lab, holding the base
//! image, the per-VM qcow2 overlays, the NoCloud seeds and the kernel/initrd of direct boot —
//! all uploaded or created through libvirt, so the same code serves a local `qemu:///system` and
//! a remote `qemu+ssh://host/system` (nothing in a domain refers to a file on kubedrill's side).
//!
//! Pools carry no metadata element: ownership is the UUID kubedrill generated and recorded in
//! the lab state before defining it (as for networks).

use super::hypervisor::{Hypervisor, HypervisorError};
use std::io::Read;
use std::path::Path;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Where lab pools live on the hypervisor host.
pub const POOL_ROOT: &str = "/var/lib/libvirt/images/kubedrill";

/// Pool name of a lab.
pub fn pool_name(lab: &str) -> String {
    format!("kd-{lab}")
}

/// The pool's directory on the hypervisor host.
pub fn pool_path(lab: &str) -> String {
    format!("{POOL_ROOT}/{lab}")
}

fn pool_xml(name: &str, uuid: &str, path: &str) -> String {
    format!(
        "<pool type='dir'><name>{}</name><uuid>{}</uuid><target><path>{}</path>\
         <permissions><mode>0711</mode></permissions></target></pool>",
        super::xml::escape(name),
        super::xml::escape(uuid),
        super::xml::escape(path)
    )
}

fn obj(what: &'static str, name: &str) -> impl Fn(virt::error::Error) -> HypervisorError {
    let name = name.to_string();
    move |e| HypervisorError::Object {
        what,
        name: name.clone(),
        message: e.message().to_string(),
    }
}

impl Hypervisor {
    /// Define, build (create the directory) and start the lab's pool; refuses a taken name.
    pub fn create_pool(&self, name: &str, uuid: &str, path: &str) -> Result<(), HypervisorError> {
        if self.conn().lookup_storage_pool_by_name(name).is_ok() {
            return Err(HypervisorError::NameTaken {
                kind: "storage pool",
                name: name.to_string(),
            });
        }
        let pool = self
            .conn()
            .define_storage_pool_xml(&pool_xml(name, uuid, path), 0)
            .map_err(obj("define storage pool", name))?;
        pool.build(0).map_err(obj("build storage pool", name))?;
        pool.create(0).map_err(obj("start storage pool", name))?;
        Ok(())
    }

    fn pool(&self, name: &str) -> Result<StoragePool, HypervisorError> {
        self.conn()
            .lookup_storage_pool_by_name(name)
            .map_err(obj("find storage pool", name))
    }

    /// Upload a local file as a new volume of the pool (format `raw` or `qcow2`: libvirt only
    /// records it; the bytes are the file's). Returns the volume's path on the hypervisor.
    pub fn upload_volume(
        &self,
        pool: &str,
        vol: &str,
        local: &Path,
        format: &str,
    ) -> Result<String, HypervisorError> {
        let p = self.pool(pool)?;
        let io = |e: std::io::Error| HypervisorError::Object {
            what: "read for upload",
            name: local.display().to_string(),
            message: e.to_string(),
        };
        let size = std::fs::metadata(local).map_err(io)?.len();
        let xml_text = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{size}</capacity>\
             <allocation unit='bytes'>{size}</allocation><target><format type='{}'/></target></volume>",
            super::xml::escape(vol),
            super::xml::escape(format)
        );
        let v = StorageVol::create_xml(&p, &xml_text, 0).map_err(obj("create volume", vol))?;
        let stream = Stream::new(self.conn(), 0).map_err(obj("open upload stream", vol))?;
        v.upload(&stream, 0, size, 0)
            .map_err(obj("start upload", vol))?;
        let mut f = std::fs::File::open(local).map_err(io)?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            let mut sent = 0;
            while sent < n {
                let k = stream.send(&buf[sent..n]).map_err(obj("upload", vol))?;
                if k <= 0 {
                    let _ = stream.abort();
                    return Err(HypervisorError::Object {
                        what: "upload",
                        name: vol.to_string(),
                        message: "the stream accepted no data".into(),
                    });
                }
                sent += k as usize;
            }
        }
        stream.finish().map_err(obj("finish upload", vol))?;
        v.path().map_err(obj("volume path", vol))
    }

    /// A qcow2 overlay volume of `capacity_gib` on a backing volume (by path, qcow2).
    pub fn create_overlay(
        &self,
        pool: &str,
        vol: &str,
        backing: &str,
        capacity_gib: u64,
    ) -> Result<String, HypervisorError> {
        let p = self.pool(pool)?;
        let xml_text = format!(
            "<volume><name>{}</name><capacity unit='GiB'>{capacity_gib}</capacity>\
             <target><format type='qcow2'/></target>\
             <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
            super::xml::escape(vol),
            super::xml::escape(backing)
        );
        let v = StorageVol::create_xml(&p, &xml_text, 0).map_err(obj("create overlay", vol))?;
        v.path().map_err(obj("volume path", vol))
    }

    /// Remove the lab's pool — only when its UUID is the recorded one: every volume in it
    /// (overlays, seeds, base, console logs), then the directory and the definition.
    pub fn remove_pool(&self, name: &str, uuid: &str) -> Result<Option<String>, String> {
        let Ok(pool) = self.conn().lookup_storage_pool_by_name(name) else {
            return Ok(None);
        };
        if pool.uuid_string().ok().as_deref() != Some(uuid) {
            return Err("its UUID is not the one this lab created".into());
        }
        let _ = pool.refresh(0);
        let mut n = 0;
        for v in pool.list_all_volumes(0).unwrap_or_default() {
            if v.delete(0).is_ok() {
                n += 1;
            }
        }
        if pool.is_active().unwrap_or(false) {
            let _ = pool.destroy();
        }
        pool.delete(0).map_err(|e| e.message().to_string())?;
        pool.undefine().map_err(|e| e.message().to_string())?;
        Ok(Some(format!("storage pool {name} ({n} volumes)")))
    }
}
