//! Generated code: protobuf messages (protobuf-codegen) and grpcio service glue
//! (our `build.rs`) for every file in `proto/`. Module `x` holds the messages of
//! `proto/x.proto`, module `x_grpc` its services: `XClient` (every method takes
//! a timeout, on a channel or a routed `goplugin::route::Conn`), the server
//! trait `X`, `create_x` (a grpcio service), `offer_x` (for a broker id,
//! served on a server of its own or routed) and `route_x` (the routed
//! server's side); `routers` lists every service's `route_x`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));

/// A request as the generated server glue receives it: the message, or why
/// its bytes are not one.
pub type Decoded<T> = Result<T, protobuf::Error>;

/// Decodes a request on the server side without failing the call: grpcio
/// answers a request its deserializer rejects with INTERNAL (a server fault);
/// the generated glue answers `Err` with INVALID_ARGUMENT instead, as the
/// fault is the caller's. Same decoding as grpcio's `pb_de`.
pub fn decode_request<T: protobuf::Message>(
    mut reader: grpcio::MessageReader,
) -> grpcio::Result<Decoded<T>> {
    let mut input = protobuf::CodedInputStream::from_buf_read(&mut reader);
    let mut m = T::new();
    Ok(m.merge_from(&mut input).map(|()| m))
}

/// The request encoder of the server-side descriptors, never called: a
/// server only decodes requests.
pub fn never_encode_request<T>(_: &Decoded<T>, _: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    Err(grpcio::Error::Codec(
        "a server-side method descriptor does not encode requests".into(),
    ))
}
