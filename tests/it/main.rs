//! Integration tests: real plugin processes, real gRPC over real sockets, and
//! real Go go-plugin programs. One binary (faster to link with grpcio).

mod bounds;
mod dropin;
mod failures;
mod faults;
mod feeds;
mod flood;
mod golden;
mod host;
mod hostile;
mod interop;
mod layers;
mod median;
mod monitoring;
mod node;
mod packaging;
mod probe;
mod proc;
#[path = "../common/programs.rs"]
mod programs;
mod relay;
mod soak;
mod util;
