//! The directory where the run's processes record their loopback listeners for `loopback:own`
//! (the library's own.rs): made when a rule or grantable rule is `loopback:own`, mode 0700,
//! named by the policy's locator, removed when the run ends.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use egress_policy::{Locator, Rule, Target};

use crate::Fatal;

pub struct OwnDir(Option<PathBuf>);

impl OwnDir {
    pub fn create(rules: &[Rule], grantable: &[Rule], locator: &Locator) -> Result<OwnDir, Fatal> {
        let used = rules
            .iter()
            .chain(grantable)
            .any(|r| r.target == Target::LoopbackOwn);
        if !used {
            return Ok(OwnDir(None));
        }
        let path = PathBuf::from(locator.own_dir());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                Fatal::new(
                    format!("cannot create {} for loopback:own ({e})", path.display()),
                    "loopback:own needs a writable /dev/shm",
                )
            })?;
        Ok(OwnDir(Some(path)))
    }
}

impl Drop for OwnDir {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
