//! Engines for tests: a host whose compiled components are cached under the test
//! target's temporary directory, and the connectors tests use, by name.

use std::path::{Path, PathBuf};

use sluice_engine::Connectors;
use sluice_host::{Host, HostSettings};

/// `sample`, `rest` and the `hostile` test component, compiled once into `cache`.
pub fn connectors(cache: &Path) -> Connectors {
    let host = match Host::new(HostSettings {
        cache_dir: Some(cache.to_path_buf()),
        ..HostSettings::default()
    }) {
        Ok(h) => h,
        Err(e) => panic!("cannot start the connector host: {e}"),
    };
    Connectors::new(
        host,
        [
            (
                "sample".to_string(),
                PathBuf::from(sluice_artifacts::SAMPLE),
            ),
            ("rest".to_string(), PathBuf::from(sluice_artifacts::REST)),
            (
                "hostile".to_string(),
                PathBuf::from(sluice_artifacts::TEST_HOSTILE),
            ),
        ],
    )
}
