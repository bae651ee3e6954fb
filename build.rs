//! Generates the protobuf messages and the grpcio service glue from `proto/*.proto`.
//!
//! Route: protobuf-codegen 3 with its pure-Rust parser (no `protoc` needed on the
//! build host, which matters on air-gapped machines and keeps `make vendor`
//! self-contained). grpcio-compiler 0.13 only emits service code for protobuf 2,
//! so the service glue (method descriptors, clients, server traits) is generated
//! here from the same parsed descriptors.
//!
//! The generated clients take a `Duration` timeout on every call instead of a
//! `CallOption`: a gRPC call without a deadline cannot be written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protobuf::descriptor::FileDescriptorProto;

fn main() {
    fold_identical_code();
    order_symbols();
    let proto_dir = Path::new("proto");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(proto_dir)
        .expect("read proto/")
        .map(|e| e.expect("read proto/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    inputs.sort();
    println!("cargo:rerun-if-changed=proto");
    for p in &inputs {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    protobuf_codegen::Codegen::new()
        .pure()
        .includes([proto_dir])
        .inputs(&inputs)
        .cargo_out_dir("proto")
        .run_from_script();

    let parsed = protobuf_parse::Parser::new()
        .pure()
        .includes([proto_dir])
        .inputs(&inputs)
        .parse_and_typecheck()
        .expect("parse proto files");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("proto");
    let types = rust_type_paths(&parsed.file_descriptors);
    let mut mod_rs = std::fs::read_to_string(out_dir.join("mod.rs")).expect("read mod.rs");
    let mut all_methods = Vec::new();
    let mut routed_modules = Vec::new();
    let mut framed_modules = Vec::new();
    for fd in &parsed.file_descriptors {
        if fd.service.is_empty() || fd.name().starts_with("google/") {
            continue;
        }
        let stem = module_name(fd.name());
        let code = services_code(fd, &types);
        std::fs::write(out_dir.join(format!("{stem}_grpc.rs")), code).expect("write glue");
        writeln!(mod_rs, "pub mod {stem}_grpc;").unwrap();
        routed_modules.push(format!("{stem}_grpc::routers(table)"));
        framed_modules.push(format!("{stem}_grpc::framed_handlers()"));
        all_methods.extend(method_names(fd));
    }
    writeln!(
        mod_rs,
        "/// Every method of every service in `proto/`, as `/package.Service/Method`.\npub const ALL_METHODS: &[&str] = &[\n{}];",
        all_methods
            .iter()
            .map(|m| format!("    \"{m}\",\n"))
            .collect::<String>()
    )
    .unwrap();
    writeln!(
        mod_rs,
        "/// The streaming services in `proto/`, routed on `table` (a broker's shared server).\npub fn routers(table: &crate::goplugin::route::Table) -> Vec<::grpcio::Service> {{\n    [{}].into_iter().flatten().collect()\n}}",
        routed_modules.join(", ")
    )
    .unwrap();
    writeln!(
        mod_rs,
        "/// Every unary method in `proto/`, by full name, with its glue for framed\n/// calls (`crate::goplugin::framed::server`).\npub fn framed_handlers() -> Vec<(&'static str, crate::goplugin::framed::server::Handler)> {{\n    [{}].into_iter().flatten().collect()\n}}",
        framed_modules.join(", ")
    )
    .unwrap();
    std::fs::write(out_dir.join("mod.rs"), mod_rs).expect("write mod.rs");
}

/// The Rust module protobuf-codegen makes for a .proto file.
fn module_name(file: &str) -> String {
    let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
    stem.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Maps fully qualified message names (".pkg.Msg") to Rust paths usable from a
/// sibling module of the generated code.
fn rust_type_paths(files: &[FileDescriptorProto]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    // The well-known types the protos use; protobuf's crate ships them.
    map.insert(
        ".google.protobuf.Empty".to_string(),
        "::protobuf::well_known_types::empty::Empty".to_string(),
    );
    map.insert(
        ".google.protobuf.Timestamp".to_string(),
        "::protobuf::well_known_types::timestamp::Timestamp".to_string(),
    );
    for fd in files.iter().filter(|f| !f.name().starts_with("google/")) {
        let module = module_name(fd.name());
        for m in &fd.message_type {
            let full = if fd.package().is_empty() {
                format!(".{}", m.name())
            } else {
                format!(".{}.{}", fd.package(), m.name())
            };
            map.insert(full, format!("super::{module}::{}", m.name()));
        }
    }
    map
}

/// `GRPCController` → `grpc_controller`, `HealthReport` → `health_report`.
fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase()));
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `/package.Service/Method` of every method of `fd`'s services.
fn method_names(fd: &FileDescriptorProto) -> Vec<String> {
    let mut out = Vec::new();
    for svc in &fd.service {
        for m in &svc.method {
            let full_svc = if fd.package().is_empty() {
                svc.name().to_string()
            } else {
                format!("{}.{}", fd.package(), svc.name())
            };
            out.push(format!("/{full_svc}/{}", m.name()));
        }
    }
    out
}

fn services_code(fd: &FileDescriptorProto, types: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    writeln!(s, "// @generated by loopp's build.rs from {}", fd.name()).unwrap();
    writeln!(s, "#![allow(dead_code, clippy::all)]").unwrap();
    let mut routes = Vec::new();
    let mut framed = Vec::new();
    for svc in &fd.service {
        let svc_name = svc.name();
        let full_svc = if fd.package().is_empty() {
            svc_name.to_string()
        } else {
            format!("{}.{}", fd.package(), svc_name)
        };
        let svc_snake = snake(svc_name);
        let mut client = String::new();
        let mut trait_ = String::new();
        let mut builder = String::new();
        let mut router = String::new();
        let mut framed_glue = String::new();
        for m in &svc.method {
            let req = &types[m.input_type()];
            let resp = &types[m.output_type()];
            let mname = snake(m.name());
            let konst = format!("METHOD_{}_{}", svc_snake, mname).to_uppercase();
            let (ty, client_fn, add) = match (m.client_streaming(), m.server_streaming()) {
                (false, false) => ("Unary", "unary", "add_unary_handler"),
                (false, true) => ("ServerStreaming", "server", "add_server_streaming_handler"),
                (true, false) => ("ClientStreaming", "client", "add_client_streaming_handler"),
                (true, true) => ("Duplex", "duplex", "add_duplex_streaming_handler"),
            };
            writeln!(
                s,
                "pub const {konst}: ::grpcio::Method<{req}, {resp}> = ::grpcio::Method {{\n    ty: ::grpcio::MethodType::{ty},\n    name: \"/{full_svc}/{}\",\n    req_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n    resp_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n}};\n",
                m.name()
            )
            .unwrap();
            // The server registers the method with a request that decodes
            // leniently (see `crate::proto::decode_request`): undecodable bytes
            // reach the glue as `Err`, answered with INVALID_ARGUMENT.
            if !m.client_streaming() {
                writeln!(
                    s,
                    "const SERVE_{konst}: ::grpcio::Method<super::Decoded<{req}>, {resp}> = ::grpcio::Method {{\n    ty: ::grpcio::MethodType::{ty},\n    name: \"/{full_svc}/{}\",\n    req_mar: ::grpcio::Marshaller {{ ser: super::never_encode_request, de: super::decode_request }},\n    resp_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n}};\n",
                    m.name()
                )
                .unwrap();
            }
            let doc = format!(
                "    /// `{full_svc}/{}`; the call fails with DeadlineExceeded after `timeout`.\n",
                m.name()
            );
            let path = format!("/{full_svc}/{}", m.name());
            match client_fn {
                "unary" => {
                    write!(client, "{doc}    pub fn {mname}(&self, req: &{req}, timeout: ::std::time::Duration) -> ::grpcio::Result<{resp}> {{\n        crate::goplugin::unary::wait(self.{mname}_async(req, timeout))\n    }}\n").unwrap();
                    write!(client, "    /// `{full_svc}/{}`, sent without waiting: the reply is a future that the\n    /// transport completes; it fails with DeadlineExceeded after `timeout`.\n    pub fn {mname}_async(&self, req: &{req}, timeout: ::std::time::Duration) -> ::grpcio::Result<crate::goplugin::unary::Unary<{resp}>> {{\n        if let Some((channel, object)) = &self.framed {{\n            return crate::goplugin::framed::client::call_unary(channel, *object, \"/{full_svc}/{}\", req, timeout);\n        }}\n        self.client.get().unary_call_async(&{konst}, req, self.opt(timeout)).map(crate::goplugin::unary::Unary::new)\n    }}\n", m.name(), m.name()).unwrap();
                    write!(trait_, "    fn {mname}(&mut self, ctx: crate::goplugin::call::Ctx, req: {req}, sink: crate::goplugin::call::Sink<{resp}>) {{\n        let _ = req;\n        crate::goplugin::rpc::unimplemented(&ctx, sink)\n    }}\n").unwrap();
                    write!(framed_glue, "fn framed_{svc_snake}_{mname}(table: &crate::goplugin::route::Table, object: u32, served: crate::goplugin::framed::Served, message: &[u8], answer: crate::goplugin::framed::RawAnswer) {{\n    crate::goplugin::metrics::server_begin(\"{path}\");\n    let ctx = crate::goplugin::call::Ctx::Routed(served);\n    let sink = crate::goplugin::call::Sink::Routed(crate::goplugin::framed::Answer::new(answer, |t: &{resp}| ::protobuf::Message::write_to_bytes(t)));\n    let req = match <{req} as ::protobuf::Message>::parse_from_bytes(message) {{\n        Ok(req) => req,\n        Err(e) => {{\n            let status = crate::goplugin::framed::invalid_request(\"{path}\", \"{}\", e);\n            return crate::goplugin::rpc::fail_unary(&ctx, sink, status);\n        }}\n    }};\n    let obj = match table.find_id::<crate::goplugin::route::Routed<dyn {svc_name} + Send>>(object, \"{full_svc}\") {{\n        Ok(obj) => obj,\n        Err(status) => return crate::goplugin::rpc::fail_unary(&ctx, sink, status),\n    }};\n    let _lane = obj.lane.as_ref().map(|l| l.enter());\n    let mut target = obj.lock();\n    target.{mname}(ctx, req, sink)\n}}\n\n", m.input_type().trim_start_matches('.')).unwrap();
                    framed.push(format!("(\"{path}\", framed_{svc_snake}_{mname} as crate::goplugin::framed::server::Handler)"));
                }
                "server" => {
                    write!(client, "{doc}    pub fn {mname}(&self, req: &{req}, timeout: ::std::time::Duration) -> ::grpcio::Result<::grpcio::ClientSStreamReceiver<{resp}>> {{\n        self.client.get().server_streaming(&{konst}, req, self.opt(timeout))\n    }}\n").unwrap();
                    write!(trait_, "    fn {mname}(&mut self, ctx: ::grpcio::RpcContext, req: {req}, sink: ::grpcio::ServerStreamingSink<{resp}>) {{\n        let _ = req;\n        ::grpcio::unimplemented_call!(ctx, sink)\n    }}\n").unwrap();
                }
                "client" => {
                    write!(client, "{doc}    pub fn {mname}(&self, timeout: ::std::time::Duration) -> ::grpcio::Result<(::grpcio::ClientCStreamSender<{req}>, ::grpcio::ClientCStreamReceiver<{resp}>)> {{\n        self.client.get().client_streaming(&{konst}, self.opt(timeout))\n    }}\n").unwrap();
                    write!(trait_, "    fn {mname}(&mut self, ctx: ::grpcio::RpcContext, stream: ::grpcio::RequestStream<{req}>, sink: ::grpcio::ClientStreamingSink<{resp}>) {{\n        let _ = stream;\n        ::grpcio::unimplemented_call!(ctx, sink)\n    }}\n").unwrap();
                }
                _ => {
                    write!(client, "{doc}    pub fn {mname}(&self, timeout: ::std::time::Duration) -> ::grpcio::Result<(::grpcio::ClientDuplexSender<{req}>, ::grpcio::ClientDuplexReceiver<{resp}>)> {{\n        self.client.get().duplex_streaming(&{konst}, self.opt(timeout))\n    }}\n").unwrap();
                    write!(trait_, "    fn {mname}(&mut self, ctx: ::grpcio::RpcContext, stream: ::grpcio::RequestStream<{req}>, sink: ::grpcio::DuplexSink<{resp}>) {{\n        let _ = stream;\n        ::grpcio::unimplemented_call!(ctx, sink)\n    }}\n").unwrap();
                }
            }
            let desc = if m.client_streaming() {
                konst.clone()
            } else {
                format!("SERVE_{konst}")
            };
            // The call itself, on `target` (an implementation of the trait),
            // once the request is known good.
            let call = |target: &str| {
                if m.client_streaming() {
                    format!("        {target}.{mname}(ctx, req, resp)\n")
                } else {
                    format!(
                        "        match req {{\n            Ok(req) => {target}.{mname}({}),\n            Err(e) => {{\n                let status = ::grpcio::RpcStatus::with_message(::grpcio::RpcStatusCode::INVALID_ARGUMENT, format!(\"{path}: the request is not a valid {}: {{e}}\"));\n                crate::goplugin::rpc::fail_call(&ctx, resp, status);\n            }}\n        }}\n",
                        if m.server_streaming() {
                            "ctx, req, resp"
                        } else {
                            "crate::goplugin::call::Ctx::Grpc(ctx), req, crate::goplugin::call::Sink::Grpc(resp)"
                        },
                        m.input_type().trim_start_matches('.'),
                    )
                }
            };
            write!(
                builder,
                "    let mut instance = s.clone();\n    let lane_ = lane.clone();\n    builder = builder.{add}(&{desc}, move |ctx, req, resp| {{\n        crate::goplugin::metrics::server_begin(\"{path}\");\n        let _lane = lane_.as_ref().map(|l| l.enter());\n{}    }});\n",
                call("instance")
            )
            .unwrap();
            // Unary methods of routed objects are served by bytes, through
            // the framed glue (`framed::server::routed_unary_service`).
            let streaming = m.client_streaming() || m.server_streaming();
            if streaming {
                write!(
                router,
                "    let table_ = table.clone();\n    builder = builder.{add}(&{desc}, move |ctx, req, resp| {{\n        crate::goplugin::metrics::server_begin(\"{path}\");\n        let obj = match table_.find::<crate::goplugin::route::Routed<dyn {svc_name} + Send>>(&ctx, \"{full_svc}\") {{\n            Ok(obj) => obj,\n            Err(status) => return crate::goplugin::rpc::fail_call(&ctx, resp, status),\n        }};\n        let _lane = obj.lane.as_ref().map(|l| l.enter());\n        let mut target = obj.lock();\n{}    }});\n",
                call("target")
            )
            .unwrap();
            }
        }
        write!(
            s,
            "/// Client of `{full_svc}`. Every method takes the call's timeout.\n#[derive(Clone)]\npub struct {svc_name}Client {{\n    client: crate::goplugin::rpc::LazyClient,\n    headers: Option<::grpcio::Metadata>,\n    framed: Option<(crate::goplugin::framed::Channel, u32)>,\n}}\n\nimpl {svc_name}Client {{\n    /// A client on a channel, or on a routed broker connection (its unary\n    /// calls framed when the connection is).\n    pub fn new(conn: impl Into<crate::goplugin::route::Conn>) -> Self {{\n        let conn = conn.into();\n        {svc_name}Client {{ client: conn.client, headers: conn.route, framed: conn.framed }}\n    }}\n\n    /// Where a future waiting on this client's calls is best polled: where\n    /// their replies arrive (gRPC's completion-queue thread, or the framed\n    /// connection's reader).\n    pub fn spawner(&self) -> crate::goplugin::rpc::Spawner {{\n        match &self.framed {{\n            Some(_) => crate::goplugin::rpc::Spawner::framed(),\n            None => crate::goplugin::rpc::Spawner::new(self.client.get().clone()),\n        }}\n    }}\n\n    fn opt(&self, timeout: ::std::time::Duration) -> ::grpcio::CallOption {{\n        let opt = ::grpcio::CallOption::default().timeout(timeout);\n        match &self.headers {{\n            Some(h) => opt.headers(h.clone()),\n            None => opt,\n        }}\n    }}\n\n{client}}}\n\n/// Server side of `{full_svc}`; unimplemented methods answer Unimplemented.\npub trait {svc_name} {{\n{trait_}}}\n\n/// Wraps a `{svc_name}` implementation as a grpcio service. Created inside\n/// a `goplugin::pool::Lane`, its handlers run in that lane.\npub fn create_{svc_snake}<S: {svc_name} + Send + Clone + 'static>(s: S) -> ::grpcio::Service {{\n    create_{svc_snake}_in(s, crate::goplugin::pool::Lane::ambient())\n}}\n\nfn create_{svc_snake}_in<S: {svc_name} + Send + Clone + 'static>(s: S, lane: Option<crate::goplugin::pool::Lane>) -> ::grpcio::Service {{\n    let mut builder = ::grpcio::ServiceBuilder::new();\n{builder}    let _ = lane;\n    let _ = s;\n    builder.build()\n}}\n\n/// A `{svc_name}` implementation to serve on a broker id: as a server of its\n/// own, or routed on the broker's shared server. Created inside a\n/// `goplugin::pool::Lane`, its handlers run in that lane.\npub fn offer_{svc_snake}<S: {svc_name} + Send + Clone + 'static>(s: S) -> crate::goplugin::route::Offer {{\n    let lane = crate::goplugin::pool::Lane::ambient();\n    let routed: ::std::sync::Arc<crate::goplugin::route::Routed<dyn {svc_name} + Send>> = ::std::sync::Arc::new(crate::goplugin::route::Routed::new(lane.clone(), Box::new(s.clone())));\n    crate::goplugin::route::Offer::new(\"{full_svc}\", routed, Box::new(move || create_{svc_snake}_in(s, lane)))\n}}\n\n{framed_glue}"
        )
        .unwrap();
        // Streaming methods of routed objects, by the route header; the
        // unary ones go through the framed glue above.
        if !router.is_empty() {
            write!(
                s,
                "/// Serves the streaming methods of `{full_svc}` for every object in `table`,\n/// by the route header.\npub fn route_{svc_snake}(table: &crate::goplugin::route::Table) -> ::grpcio::Service {{\n    let mut builder = ::grpcio::ServiceBuilder::new();\n{router}    builder.build()\n}}\n\n"
            )
            .unwrap();
            routes.push(format!("route_{svc_snake}(table)"));
        }
    }
    writeln!(
        s,
        "/// The streaming services of this file, routed on `table` (none: no\n/// streaming method).\npub fn routers(table: &crate::goplugin::route::Table) -> Vec<::grpcio::Service> {{\n    let _ = table;\n    vec![{}]\n}}",
        routes.join(", ")
    )
    .unwrap();
    writeln!(
        s,
        "/// The unary methods of this file, with their framed glue.\npub fn framed_handlers() -> Vec<(&'static str, crate::goplugin::framed::server::Handler)> {{\n    vec![{}]\n}}",
        framed.join(", ")
    )
    .unwrap();
    s
}

/// The binaries are linked with lld and identical code folding: the C
/// core's C++ templates and Rust's generics leave many byte-identical
/// functions. Relative relocations are packed (DT_RELR, glibc 2.36 and
/// later, static-pie included): the static-pie's 313 KB of `.rela.dyn`
/// becomes 3 KB. Link arguments of the binaries only: no dependency is
/// rebuilt for them. Not gold, which also folds: rustc warns it is
/// deprecated, and it cannot link a static-pie (the binary would lose
/// ASLR). `make` installs lld (scripts/deps.sh).
fn fold_identical_code() {
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}

/// The functions an idle process runs come first in `.text`, in the order
/// `scripts/symbol-order.sh` recorded (`contrib/symbol-order.txt`): an idle
/// process gives back its start-up code (`pages`), and what it runs again
/// then maps a few hundred KB instead of most of the 5.7 MB of code (the
/// kernel maps code 64 KiB at a time). Names the binary no longer has are
/// skipped, without a warning: a stale order costs memory, never
/// correctness.
fn order_symbols() {
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("contrib/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
