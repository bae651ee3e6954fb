//! Generated code: protobuf messages (protobuf-codegen) and grpcio service glue
//! (our `build.rs`) for every file in `proto/`. Module `x` holds the messages of
//! `proto/x.proto`, module `x_grpc` its services: `XClient` (every method takes
//! a timeout), the server trait `X` and `create_x`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
