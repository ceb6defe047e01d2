//! Build every component of the repository for `wasm32-wasip2` with the `connector`
//! profile, in a target directory of its own (so this nested cargo never waits on
//! the lock of the build that runs it), and export each artifact's path.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, artifact file stem, constant name)
const COMPONENTS: &[(&str, &str, &str)] = &[
    (
        "sluice-connector-sample",
        "sluice_connector_sample",
        "SAMPLE",
    ),
    ("sluice-connector-rest", "sluice_connector_rest", "REST"),
    (
        "sluice-connector-http-post",
        "sluice_connector_http_post",
        "HTTP_POST",
    ),
    ("tickets-source", "tickets_source", "TICKETS_SOURCE"),
    ("sluice-test-hostile", "sluice_test_hostile", "TEST_HOSTILE"),
    ("sluice-test-probe", "sluice_test_probe", "TEST_PROBE"),
    (
        "sluice-test-not-a-connector",
        "sluice-test-not-a-connector",
        "TEST_NOT_A_CONNECTOR",
    ),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for dir in [
        "sdk",
        "wit",
        "connectors",
        "examples",
        "tests/components",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    ensure_wasm_target();
    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "connector",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _, _) in COMPONENTS {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the WebAssembly components failed ({s}); run `cargo build --profile connector --target wasm32-wasip2 -p <package>` to see why"
        ),
        Err(e) => panic!("cannot run cargo to build the WebAssembly components: {e}"),
    }
    let out = target_dir.join("wasm32-wasip2").join("connector");
    for (_, stem, constant) in COMPONENTS {
        let path = out.join(format!("{stem}.wasm"));
        println!("cargo:rustc-env=SLUICE_WASM_{constant}={}", path.display());
    }
}

/// `rust-toolchain.toml` names the `wasm32-wasip2` target, but rustup adds it only
/// when it installs the toolchain: a toolchain already present without it would fail
/// the build of a fresh clone. Add it then, once.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else { return };
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target with rustup");
    match Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo:warning=`rustup target add wasm32-wasip2` failed ({s})"),
        Err(e) => println!("cargo:warning=cannot run rustup to add wasm32-wasip2: {e}"),
    }
}
