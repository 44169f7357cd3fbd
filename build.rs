//! Compiles the XDP steering program (`xdp-prog/xtcp.bpf.c`) with clang into OUT_DIR and turns its shared header
//! (`xdp-prog/xtcp_shared.h`) into Rust with bindgen, so the constants and map layouts are written once, in C.
//! Only with the `afxdp` feature (the default).

#[cfg(feature = "afxdp")]
use std::path::PathBuf;
#[cfg(feature = "afxdp")]
use std::process::{exit, Command};

const PROG_DIR: &str = "xdp-prog";
#[cfg(feature = "afxdp")]
const PROG_SRC: &str = "xdp-prog/xtcp.bpf.c";
#[cfg(feature = "afxdp")]
const SHARED_H: &str = "xdp-prog/xtcp_shared.h";

fn main() {
    println!("cargo:rerun-if-changed={PROG_DIR}");
    println!("cargo:rerun-if-env-changed=CLANG");
    #[cfg(feature = "afxdp")]
    {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        compile_bpf(&out);
        generate_bindings(&out);
    }
}

#[cfg(feature = "afxdp")]
/// Stops the build with one line that says what to do.
fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    exit(1);
}

#[cfg(feature = "afxdp")]
fn compile_bpf(out: &std::path::Path) {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let obj = out.join("xtcp.bpf.o");
    let arch_include =
        format!("-I/usr/include/{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(arch_include)
        .arg(format!("-I{PROG_DIR}"))
        .args(["-c", PROG_SRC, "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "clang failed ({s}) compiling {PROG_SRC}; the BPF headers come from libbpf-dev (scripts/test.sh installs it)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "`{clang}` not found: the XDP program needs clang — apt-get install clang llvm libbpf-dev \
             (or run scripts/test.sh as root, or build with --no-default-features to leave AF_XDP out)"
        )),
        Err(e) => fail(&format!("cannot run `{clang}`: {e}")),
    }
}

#[cfg(feature = "afxdp")]
fn generate_bindings(out: &std::path::Path) {
    let bindings = bindgen::Builder::default()
        .header(SHARED_H)
        .allowlist_type("xtcp_.*")
        .allowlist_var("XTCP_.*")
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!("bindgen failed on {SHARED_H}: {e} (it needs libclang: apt-get install clang)"))
        });
    let mut text = bindings.to_string();
    // Map and program names are C identifiers, which bindgen does not export: take them from the same #defines.
    let header = std::fs::read_to_string(SHARED_H).unwrap_or_else(|e| fail(&format!("cannot read {SHARED_H}: {e}")));
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(name), Some(value), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if (name.starts_with("XTCP_MAP_") || name.starts_with("XTCP_PROG_"))
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                text.push_str(&format!("pub const {name}: &str = \"{value}\";\n"));
            }
        }
    }
    std::fs::write(out.join("xtcp_shared.rs"), text).unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}
