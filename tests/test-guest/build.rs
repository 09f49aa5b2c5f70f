//! Link arguments that make the binary a freestanding, statically linked ELF
//! loaded at 16 MiB, which the monitor boots through the Linux 64-bit path.

fn main() {
    for arg in [
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--image-base=0x1000000",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
