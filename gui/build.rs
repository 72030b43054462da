//! The .ui templates and the stylesheet go into the binary as a GResource,
//! so a plain `cargo build` gives a program that runs from anywhere.

fn main() {
    glib_build_tools::compile_resources(&["src"], "src/hiber.gresource.xml", "hiber.gresource");
}
