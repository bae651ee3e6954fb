// Command gohost is a hashicorp go-plugin (1.0.1) host used by loopp's tests
// and benchmark to drive a plugin (Rust or Go) over the gRPC protocol.
//
//	gohost interop <plugin-path>
//	gohost bench <plugin-path> <starts> <calls>
//
// interop prints one line per step on stdout and exits non-zero at the first
// failure; go-plugin's own debug log (JSON) goes to stderr. bench prints one
// JSON line with start-to-ready and Ping round-trip percentiles.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"

	"github.com/golang/protobuf/ptypes/empty"
	"github.com/golang/protobuf/ptypes/wrappers"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// handshake must match the Rust side and tests/go/plugin.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  0,
	MagicCookieKey:   "LOOPP_EXAMPLE_PLUGIN",
	MagicCookieValue: "8d5c2b0f4f7a4e6f9a3b1c0d2e4f6a8b",
}

const callTimeout = 5 * time.Second

// exampleClient calls loopp.example.Example over conn. broker is the
// host-side end of the plugin's GRPCBroker.
type exampleClient struct {
	conn   *grpc.ClientConn
	broker *plugin.GRPCBroker
}

// invoke makes one unary call with a 5 s deadline.
func invoke(conn *grpc.ClientConn, method string, in, out interface{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return conn.Invoke(ctx, "/loopp.example.Example/"+method, in, out)
}

func echo(conn *grpc.ClientConn, text string) (string, error) {
	out := new(wrappers.StringValue)
	err := invoke(conn, "Echo", &wrappers.StringValue{Value: text}, out)
	return out.Value, err
}

func (c *exampleClient) echo(text string) (string, error) { return echo(c.conn, text) }

func (c *exampleClient) serveEcho() (uint32, error) {
	out := new(wrappers.UInt32Value)
	err := invoke(c.conn, "ServeEcho", &empty.Empty{}, out)
	return out.Value, err
}

func (c *exampleClient) callEcho(id uint32) (string, error) {
	out := new(wrappers.StringValue)
	err := invoke(c.conn, "CallEcho", &wrappers.UInt32Value{Value: id}, out)
	return out.Value, err
}

// registerEcho serves the host's own Example (Echo only; the plugin's
// CallEcho needs nothing else) with the "go: " prefix.
func registerEcho(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "loopp.example.Example",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler: func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := new(wrappers.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return &wrappers.StringValue{Value: "go: " + in.Value}, nil
			},
		}},
	}, struct{}{})
}

// examplePlugin is the "example" entry of the plugin set (client side only).
type examplePlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (examplePlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("gohost only dispenses Example")
}

func (examplePlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return &exampleClient{conn: conn, broker: broker}, nil
}

func newClient(path string, level hclog.Level) *plugin.Client {
	return plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{"example": examplePlugin{}},
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "gohost",
			Level:      level,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gohost: "+format+"\n", args...)
	os.Exit(1)
}

// step prints one result line; stdout is an unbuffered *os.File.
func step(format string, args ...interface{}) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func interop(path string) {
	client := newClient(path, hclog.Debug)
	defer client.Kill() // on panic; Kill is idempotent (fail() calls it itself, os.Exit skips defers)
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		fail("start: %v", err)
	}
	check := func(what string, err error) {
		if err != nil {
			client.Kill()
			fail("%s: %v", what, err)
		}
	}

	check("ping", rpc.Ping())
	step("ping ok")

	raw, err := rpc.Dispense("example")
	check("dispense", err)
	ex := raw.(*exampleClient)
	reply, err := ex.echo("from go host")
	check("echo", err)
	step("echo %s", reply)

	// The plugin serves an Example on a broker id; we dial it.
	id, err := ex.serveEcho()
	check("serve-echo", err)
	conn, err := ex.broker.Dial(id)
	check("serve-echo dial", err)
	reply, err = echo(conn, "via broker")
	conn.Close()
	check("serve-echo echo", err)
	step("serve-echo %s", reply)

	// We serve an Example on a broker id; the plugin dials it.
	id = ex.broker.NextId()
	go ex.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		registerEcho(s)
		return s
	})
	reply, err = ex.callEcho(id)
	check("call-echo", err)
	step("call-echo %s", reply)

	start := time.Now()
	client.Kill()
	step("kill %d", time.Since(start).Milliseconds())
	step("exited %t", client.Exited())
}

// percentile returns the nearest-rank p-th percentile of sorted xs.
func percentile(xs []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	if i < 0 {
		i = 0
	}
	return xs[i]
}

func bench(path string, starts, calls int) {
	// (a) start-to-ready: NewClient .. first successful Ping (Client() does
	// not connect by itself; the gRPC dial is lazy).
	startMs := make([]float64, 0, starts)
	for i := 0; i < starts; i++ {
		t := time.Now()
		client := newClient(path, hclog.Error)
		rpc, err := client.Client()
		if err == nil {
			err = rpc.Ping()
		}
		d := time.Since(t)
		client.Kill()
		if err != nil {
			fail("start %d: %v", i, err)
		}
		startMs = append(startMs, float64(d.Nanoseconds())/1e6)
	}

	// (b) sequential health-check round trips on one client.
	client := newClient(path, hclog.Error)
	defer client.Kill()
	rpc, err := client.Client()
	if err == nil {
		err = rpc.Ping() // warm up the lazy connection
	}
	if err != nil {
		client.Kill()
		fail("bench client: %v", err)
	}
	rpcUs := make([]float64, 0, calls)
	for i := 0; i < calls; i++ {
		t := time.Now()
		if err := rpc.Ping(); err != nil {
			client.Kill()
			fail("ping %d: %v", i, err)
		}
		rpcUs = append(rpcUs, float64(time.Since(t).Nanoseconds())/1e3)
	}

	sort.Float64s(startMs)
	sort.Float64s(rpcUs)
	out, _ := json.Marshal(struct {
		Impl       string  `json:"impl"`
		StartMsP50 float64 `json:"start_ms_p50"`
		StartMsP99 float64 `json:"start_ms_p99"`
		RPCUsP50   float64 `json:"rpc_us_p50"`
		RPCUsP99   float64 `json:"rpc_us_p99"`
		Starts     int     `json:"starts"`
		Calls      int     `json:"calls"`
	}{"go-plugin", percentile(startMs, 50), percentile(startMs, 99),
		percentile(rpcUs, 50), percentile(rpcUs, 99), starts, calls})
	step("%s", out)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gohost interop <plugin-path>\n       gohost bench <plugin-path> <starts> <calls>")
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 2 && args[0] == "interop":
		interop(args[1])
	case len(args) == 4 && args[0] == "bench":
		starts, err1 := strconv.Atoi(args[2])
		calls, err2 := strconv.Atoi(args[3])
		if err1 != nil || err2 != nil || starts < 1 || calls < 1 {
			usage(os.Stderr)
			os.Exit(2)
		}
		bench(args[1], starts, calls)
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
}
