//! A plain WASI command: a component that does not implement the connector world.
//! The host must refuse to load it as a connector.

fn main() {
    println!("not a connector");
}
