// Command gorelayer plays a Go Chainlink relayer LOOPP at its entry points,
// for loopp's drop-in tests. It behaves as chainlink-common's relayer server
// does where a host can tell:
//
//   - at start it parses the Go LOOP environment (pkg/loop EnvConfig) and
//     exits with "error getting environment configuration: ..." when a
//     required variable is missing or malformed;
//   - it serves /metrics on 127.0.0.1:CL_PROMETHEUS_PORT;
//   - PluginRelayer.NewRelayer dials the Keystore, CSA Keystore and
//     CapabilitiesRegistry ids of the request, in that order, failing with
//     "failed to dial <Name> client connection <id>: ..." as chainlink-common
//     does; it then uses each (Accounts on both keystores, List on the
//     registry) and logs what it got;
//   - the Relayer it serves on a new broker id answers loop.Service and
//     UNIMPLEMENTED for every loop.Relayer method (the host must report the
//     method by name).
//
// The messages and service stubs are generated at test time from loopp's own
// proto/ files (tests/go/build.sh), so this also checks that those compile
// for Go.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"loopp/golang"
	"loopp/pb"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  0,
	MagicCookieKey:   "CL_PLUGIN_RELAYER_MAGIC_COOKIE",
	MagicCookieValue: "dae753d4542311b33cf041b930db0150647e806175c2818a0c88a9ab745e45aa",
}

const callTimeout = 5 * time.Second

var logger hclog.Logger

type pluginRelayer struct {
	pb.UnimplementedPluginRelayerServer
	broker *plugin.GRPCBroker
}

func (p *pluginRelayer) dial(name string, id uint32) (*grpc.ClientConn, error) {
	conn, err := p.broker.Dial(id)
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s client connection %d: %w", name, id, err)
	}
	return conn, nil
}

func (p *pluginRelayer) NewRelayer(ctx context.Context, req *pb.NewRelayerRequest) (*pb.NewRelayerReply, error) {
	ks, err := p.dial("Keystore", req.KeystoreID)
	if err != nil {
		return nil, err
	}
	csa, err := p.dial("CSAKeystore", req.KeystoreCSAID)
	if err != nil {
		ks.Close()
		return nil, err
	}
	registry, err := p.dial("CapabilityRegistry", req.CapabilityRegistryID)
	if err != nil {
		ks.Close()
		csa.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	accounts, err := pb.NewKeystoreClient(ks).Accounts(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, fmt.Errorf("keystore accounts: %w", err)
	}
	csaAccounts, err := pb.NewKeystoreClient(csa).Accounts(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, fmt.Errorf("CSA keystore accounts: %w", err)
	}
	capabilities, err := pb.NewCapabilitiesRegistryClient(registry).List(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, fmt.Errorf("capabilities registry list: %w", err)
	}
	logger.Info(fmt.Sprintf("NewRelayer ok: config %q, %d keystore accounts, %d CSA accounts, %d capabilities",
		req.Config, len(accounts.Accounts), len(csaAccounts.Accounts), len(capabilities.CapabilityID)))

	id := p.broker.NextId()
	go p.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterServiceServer(s, &golang.Service{ServiceName: "gorelayer.Relayer"})
		pb.RegisterRelayerServer(s, &relayer{})
		return s
	})
	return &pb.NewRelayerReply{RelayerID: id}, nil
}

// relayer answers UNIMPLEMENTED for every loop.Relayer method.
type relayer struct {
	pb.UnimplementedRelayerServer
}

type relayerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (relayerPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterServiceServer(s, &golang.Service{ServiceName: "gorelayer"})
	pb.RegisterPluginRelayerServer(s, &pluginRelayer{broker: broker})
	return nil
}

func (relayerPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, fmt.Errorf("gorelayer only serves")
}

func main() {
	logger = golang.Start("gorelayer")
	golang.Serve(handshake, plugin.PluginSet{"relayer": relayerPlugin{}}, logger)
}
