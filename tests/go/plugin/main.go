// Command goplugin is a hashicorp go-plugin (1.0.1) gRPC plugin serving the
// loopp.example.Example service. loopp's tests use it as the "Go side" when
// a Rust host talks to a Go plugin.
//
// No code generation: the Example messages are wire-identical to the protobuf
// well-known wrapper types, so the service descriptor is written by hand.
package main

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/golang/protobuf/ptypes/empty"
	"github.com/golang/protobuf/ptypes/wrappers"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// handshake must match the Rust side and tests/go/host.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  0,
	MagicCookieKey:   "LOOPP_EXAMPLE_PLUGIN",
	MagicCookieValue: "8d5c2b0f4f7a4e6f9a3b1c0d2e4f6a8b",
}

const (
	prefix      = "go: "
	callTimeout = 5 * time.Second
)

// example implements loopp.example.Example. The broker is needed by
// ServeEcho (serve a new Example on a broker id) and CallEcho (dial one).
type example struct {
	broker *plugin.GRPCBroker
}

func (e *example) Echo(_ context.Context, in *wrappers.StringValue) (*wrappers.StringValue, error) {
	return &wrappers.StringValue{Value: prefix + in.Value}, nil
}

// ServeEcho serves a fresh Example server on a new broker id and returns it.
func (e *example) ServeEcho(context.Context, *empty.Empty) (*wrappers.UInt32Value, error) {
	id := e.broker.NextId()
	go e.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		register(s, e.broker)
		return s
	})
	return &wrappers.UInt32Value{Value: id}, nil
}

// CallEcho dials broker id in.Value (served by the caller) and calls
// Echo("ping") on it.
func (e *example) CallEcho(ctx context.Context, in *wrappers.UInt32Value) (*wrappers.StringValue, error) {
	conn, err := e.broker.Dial(in.Value)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out := new(wrappers.StringValue)
	err = conn.Invoke(ctx, "/loopp.example.Example/Echo", &wrappers.StringValue{Value: "ping"}, out)
	return out, err
}

// register adds a hand-written Example service descriptor to s. No
// interceptors are configured anywhere, so handlers ignore that argument.
func register(s *grpc.Server, broker *plugin.GRPCBroker) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "loopp.example.Example",
		HandlerType: (*interface{})(nil), // anything implements interface{}
		Methods: []grpc.MethodDesc{
			{MethodName: "Echo", Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := new(wrappers.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return srv.(*example).Echo(ctx, in)
			}},
			{MethodName: "ServeEcho", Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := new(empty.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				return srv.(*example).ServeEcho(ctx, in)
			}},
			{MethodName: "CallEcho", Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := new(wrappers.UInt32Value)
				if err := dec(in); err != nil {
					return nil, err
				}
				return srv.(*example).CallEcho(ctx, in)
			}},
		},
		Metadata: "loopp/example.proto",
	}, &example{broker: broker})
}

// examplePlugin is the "example" entry of the plugin set (server side only).
type examplePlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (examplePlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	register(s, broker)
	return nil
}

func (examplePlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, errors.New("goplugin only serves Example")
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"example": examplePlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
		// The host parses these JSON lines and re-logs them. Note that Serve
		// swaps os.Stderr for an unread pipe after the handshake, so the
		// logger must hold the original *os.File (it does: evaluated here).
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "goplugin",
			Level:      hclog.Debug,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}
