//! Generates the prost types from `proto/` with protox, so no system `protoc`
//! is needed to build fleetpulse.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "proto/fleetpulse/v1/telemetry.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = protox::compile([schema], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
