// Command gonode plays a Go Chainlink node running loopp's LOOPPs, for
// loopp's drop-in tests:
//
//	gonode <relayer-cmd> <median-cmd> <data-dir> <rounds>
//
// It launches both with go-plugin (1.0.1) and the Go LOOP environment, as a
// Go node does: NewRelayer with a keystore, a CSA keystore and a
// capabilities registry it serves; NewPluginProvider for a median feed on a
// fresh contract (the relayer deploys its config; nothing is transmitted);
// NewMedianFactory with the provider re-served on the median plugin's
// broker (plugins never meet), value, juels and gas price sources and an
// error log; one reporting plugin per oracle (4, f=1) with a libocr protobuf
// offchain config and the provider's onchain config. Then it runs OCR-like
// rounds: the leader's Query, every Observation, the leader's Report, every
// ShouldAccept, ShouldTransmit, and Transmit through the relayer.
//
// Output: one JSON line before the rounds (the fresh contract as Go's
// client validates it) and one per round; exit 1 at the first failure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"loopp/golang"
	"loopp/pb"
)

const callTimeout = 10 * time.Second

var (
	relayerCookie = plugin.HandshakeConfig{
		MagicCookieKey:   "CL_PLUGIN_RELAYER_MAGIC_COOKIE",
		MagicCookieValue: "dae753d4542311b33cf041b930db0150647e806175c2818a0c88a9ab745e45aa",
	}
	medianCookie = plugin.HandshakeConfig{
		MagicCookieKey:   "CL_PLUGIN_MEDIAN_MAGIC_COOKIE",
		MagicCookieValue: "b12a697e19748cd695dd1690c09745ee7cc03717179958e8eadd5a7ca4646728",
	}
	transmitters = []string{"t0", "t1", "t2", "t3"}
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gonode: "+format+"\n", args...)
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func ctx() context.Context {
	c, _ := context.WithTimeout(context.Background(), callTimeout) //nolint:govet // bounded by the deadline
	return c
}

type conn struct {
	conn   *grpc.ClientConn
	broker *plugin.GRPCBroker
}

type dispenser struct{ plugin.NetRPCUnsupportedPlugin }

func (dispenser) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return errors.New("host only") }

func (dispenser) GRPCClient(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &conn{conn: c, broker: b}, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err, "free port")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// launch starts a LOOPP with the Go LOOP environment a Go node gives.
func launch(path string, cookie plugin.HandshakeConfig, tmp string) (*plugin.Client, *conn) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(),
		"TMPDIR="+tmp,
		"CL_PROMETHEUS_PORT="+strconv.Itoa(freePort()),
		"CL_MERCURY_TRANSMITTER_TRANSMIT__QUEUE_MAX_SIZE=100000",
		"CL_MERCURY_TRANSMITTER_TRANSMIT_CONCURRENCY=100",
		"CL_TRACING_ENABLED=false", "CL_TELEMETRY_ENABLED=false")
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  cookie,
		Plugins:          plugin.PluginSet{"p": dispenser{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "gonode", Level: hclog.Warn, Output: os.Stderr}),
	})
	rpc, err := client.Client()
	must(err, "start "+path)
	raw, err := rpc.Dispense("p")
	must(err, "dispense "+path)
	return client, raw.(*conn)
}

// serve serves services on a new id of broker b.
func serve(b *plugin.GRPCBroker, register func(*grpc.Server)) uint32 {
	id := b.NextId()
	go b.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		register(s)
		return s
	})
	return id
}

type keystore struct {
	pb.UnimplementedKeystoreServer
	accounts []string
}

func (k *keystore) Accounts(context.Context, *emptypb.Empty) (*pb.AccountsReply, error) {
	return &pb.AccountsReply{Accounts: k.accounts}, nil
}

type registry struct{ pb.UnimplementedCapabilitiesRegistryServer }

type source struct {
	pb.UnimplementedDataSourceServer
	value *big.Int
}

func (s *source) Observe(context.Context, *pb.ObserveRequest) (*pb.ObserveReply, error) {
	return &pb.ObserveReply{Value: &pb.BigInt{Negative: s.value.Sign() < 0, Value: new(big.Int).Abs(s.value).Bytes()}}, nil
}

type errorLog struct{ pb.UnimplementedErrorLogServer }

func (errorLog) SaveError(_ context.Context, r *pb.SaveErrorRequest) (*emptypb.Empty, error) {
	fmt.Fprintf(os.Stderr, "gonode: plugin error: %s\n", r.Message)
	return &emptypb.Empty{}, nil
}

// The relayer's provider, re-served on the median plugin's broker: each
// service forwards to the relayer's.
type (
	reportCodec struct {
		pb.UnimplementedReportCodecServer
		c pb.ReportCodecClient
	}
	onchainCodec struct {
		pb.UnimplementedOnchainConfigCodecServer
		c pb.OnchainConfigCodecClient
	}
	medianContract struct {
		pb.UnimplementedMedianContractServer
		c pb.MedianContractClient
	}
)

func (p reportCodec) BuildReport(c context.Context, r *pb.BuildReportRequest) (*pb.BuildReportReply, error) {
	return p.c.BuildReport(c, r)
}
func (p reportCodec) MedianFromReport(c context.Context, r *pb.MedianFromReportRequest) (*pb.MedianFromReportReply, error) {
	return p.c.MedianFromReport(c, r)
}
func (p reportCodec) MaxReportLength(c context.Context, r *pb.MaxReportLengthRequest) (*pb.MaxReportLengthReply, error) {
	return p.c.MaxReportLength(c, r)
}
func (p onchainCodec) Encode(c context.Context, r *pb.EncodeRequest) (*pb.EncodeReply, error) {
	return p.c.Encode(c, r)
}
func (p onchainCodec) Decode(c context.Context, r *pb.DecodeRequest) (*pb.DecodeReply, error) {
	return p.c.Decode(c, r)
}
func (p medianContract) LatestTransmissionDetails(c context.Context, r *pb.LatestTransmissionDetailsRequest) (*pb.LatestTransmissionDetailsReply, error) {
	return p.c.LatestTransmissionDetails(c, r)
}
func (p medianContract) LatestRoundRequested(c context.Context, r *pb.LatestRoundRequestedRequest) (*pb.LatestRoundRequestedReply, error) {
	return p.c.LatestRoundRequested(c, r)
}

func int192(v int64) []byte {
	b := big.NewInt(v)
	if b.Sign() < 0 {
		b.Add(b, new(big.Int).Lsh(big.NewInt(1), 192))
	}
	return b.FillBytes(make([]byte, 24))
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: gonode RELAYER-CMD MEDIAN-CMD DATA-DIR ROUNDS")
	}
	rounds, err := strconv.Atoi(os.Args[4])
	must(err, "rounds")
	dir := os.Args[3]

	relayerClient, relayer := launch(os.Args[1], relayerCookie, dir)
	defer relayerClient.Kill()
	medianClient, median := launch(os.Args[2], medianCookie, dir)
	defer medianClient.Kill()

	// NewRelayer: every id served, as a Go node serves them.
	ksID := serve(relayer.broker, func(s *grpc.Server) { pb.RegisterKeystoreServer(s, &keystore{accounts: transmitters}) })
	csaID := serve(relayer.broker, func(s *grpc.Server) { pb.RegisterKeystoreServer(s, &keystore{accounts: []string{"csa"}}) })
	regID := serve(relayer.broker, func(s *grpc.Server) { pb.RegisterCapabilitiesRegistryServer(s, registry{}) })
	cfg, _ := json.Marshal(map[string]interface{}{
		"chainFile": dir + "/chain.jsonl",
		"deploy": map[string]interface{}{
			"signers": []string{"s0", "s1", "s2", "s3"}, "transmitters": transmitters, "f": 1,
			"minAnswer": "-1000000000", "maxAnswer": "1000000000",
		},
	})
	nr, err := pb.NewPluginRelayerClient(relayer.conn).NewRelayer(ctx(), &pb.NewRelayerRequest{
		Config: string(cfg), KeystoreID: ksID, KeystoreCSAID: csaID, CapabilityRegistryID: regID,
	})
	must(err, "NewRelayer")
	relayerConn, err := relayer.broker.Dial(nr.RelayerID)
	must(err, "dial relayer")
	pp, err := pb.NewRelayerClient(relayerConn).NewPluginProvider(ctx(), &pb.NewPluginProviderRequest{
		RelayArgs:  &pb.RelayArgs{ContractID: "feed", ProviderType: "median"},
		PluginArgs: &pb.PluginArgs{TransmitterID: "t0"},
	})
	must(err, "NewPluginProvider")
	providerConn, err := relayer.broker.Dial(pp.PluginProviderID)
	must(err, "dial provider")
	contract := pb.NewMedianContractClient(providerConn)
	details, err := pb.NewContractConfigTrackerClient(providerConn).LatestConfigDetails(ctx(), &pb.LatestConfigDetailsRequest{})
	must(err, "LatestConfigDetails")
	digest := details.ConfigDigest

	// The fresh contract, as Go's client validates it.
	fresh, err := contract.LatestTransmissionDetails(ctx(), &pb.LatestTransmissionDetailsRequest{})
	must(err, "LatestTransmissionDetails")
	if len(fresh.ConfigDigest) != 32 {
		fail("expected ConfigDigest length 32 but got %d", len(fresh.ConfigDigest))
	}
	if fresh.LatestAnswer == nil {
		fail("latestAnswer is nil")
	}
	line, _ := json.Marshal(map[string]interface{}{
		"fresh": true, "epoch": fresh.Epoch, "round": fresh.Round,
		"digestIsConfig": string(fresh.ConfigDigest) == string(digest),
	})
	fmt.Println(string(line))

	// NewMedianFactory: the provider re-served on the median's broker.
	provID := serve(median.broker, func(s *grpc.Server) {
		pb.RegisterReportCodecServer(s, reportCodec{c: pb.NewReportCodecClient(providerConn)})
		pb.RegisterOnchainConfigCodecServer(s, onchainCodec{c: pb.NewOnchainConfigCodecClient(providerConn)})
		pb.RegisterMedianContractServer(s, medianContract{c: contract})
	})
	src := func(v int64) uint32 {
		return serve(median.broker, func(s *grpc.Server) { pb.RegisterDataSourceServer(s, &source{value: big.NewInt(v)}) })
	}
	errID := serve(median.broker, func(s *grpc.Server) { pb.RegisterErrorLogServer(s, errorLog{}) })
	nf, err := pb.NewPluginMedianClient(median.conn).NewMedianFactory(ctx(), &pb.NewMedianFactoryRequest{
		MedianProviderID: provID, ContractID: "feed", DataSourceID: src(4242), JuelsPerFeeCoinDataSourceID: src(3),
		GasPriceSubunitsDataSourceID: src(9), ErrorLogID: errID,
	})
	must(err, "NewMedianFactory")
	factoryConn, err := median.broker.Dial(nf.ReportingPluginFactoryID)
	must(err, "dial factory")
	onchain, err := pb.NewOnchainConfigCodecClient(providerConn).Encode(ctx(), &pb.EncodeRequest{
		OnchainConfig: &pb.OnchainConfig{Min: &pb.BigInt{Negative: true, Value: big.NewInt(1000000000).Bytes()}, Max: &pb.BigInt{Value: big.NewInt(1000000000).Bytes()}},
	})
	must(err, "OnchainConfigCodec.Encode")
	offchain, err := proto.Marshal(&pb.NumericalMedianConfigProto{AlphaReportPpb: 0, AlphaAcceptPpb: 0, DeltaCNanoseconds: uint64(time.Hour)})
	must(err, "offchain config")
	var oracles []pb.ReportingPluginClient
	for i := 0; i < 4; i++ {
		np, err := pb.NewReportingPluginFactoryClient(factoryConn).NewReportingPlugin(ctx(), &pb.NewReportingPluginRequest{
			ReportingPluginConfig: &pb.ReportingPluginConfig{
				ConfigDigest: digest, OracleID: uint32(i), N: 4, F: 1, OnchainConfig: onchain.Encoded,
				OffchainConfig: offchain, EstimatedRoundInterval: int64(time.Second),
				MaxDurationQuery: int64(time.Second), MaxDurationObservation: int64(time.Second),
				MaxDurationReport: int64(time.Second), MaxDurationShouldAcceptFinalizedReport: int64(time.Second),
				MaxDurationShouldTransmitAcceptedReport: int64(time.Second),
			},
		})
		must(err, "NewReportingPlugin")
		if np.ReportingPluginInfo.GetName() != "NumericalMedian" {
			fail("plugin name %q", np.ReportingPluginInfo.GetName())
		}
		c, err := median.broker.Dial(np.ReportingPluginID)
		must(err, "dial reporting plugin")
		oracles = append(oracles, pb.NewReportingPluginClient(c))
	}
	transmitter := pb.NewContractTransmitterClient(providerConn)

	for epoch := uint32(1); epoch <= uint32(rounds); epoch++ {
		ts := &pb.ReportTimestamp{ConfigDigest: digest, Epoch: epoch}
		leader := oracles[int(epoch)%len(oracles)]
		q, err := leader.Query(ctx(), &pb.QueryRequest{ReportTimestamp: ts})
		must(err, "Query")
		var obs []*pb.AttributedObservation
		for i, o := range oracles {
			r, err := o.Observation(ctx(), &pb.ObservationRequest{ReportTimestamp: ts, Query: q.Query})
			must(err, "Observation")
			var decoded pb.NumericalMedianObservationProto
			must(proto.Unmarshal(r.Observation, &decoded), "observation is libocr's")
			if string(decoded.Value) != string(int192(4242)) || string(decoded.GasPriceSubunits) != string(int192(9)) {
				fail("observation %x", r.Observation)
			}
			obs = append(obs, &pb.AttributedObservation{Observation: r.Observation, Observer: uint32(i)})
		}
		rep, err := leader.Report(ctx(), &pb.ReportRequest{ReportTimestamp: ts, Query: q.Query, Observations: obs})
		must(err, "Report")
		out := map[string]interface{}{"epoch": epoch, "reported": rep.ShouldReport}
		if rep.ShouldReport {
			accepted := 0
			for _, o := range oracles {
				a, err := o.ShouldAcceptFinalizedReport(ctx(), &pb.ShouldAcceptFinalizedReportRequest{ReportTimestamp: ts, Report: rep.Report})
				must(err, "ShouldAccept")
				if a.ShouldAccept {
					accepted++
				}
			}
			t, err := leader.ShouldTransmitAcceptedReport(ctx(), &pb.ShouldTransmitAcceptedReportRequest{ReportTimestamp: ts, Report: rep.Report})
			must(err, "ShouldTransmit")
			out["accepted"] = accepted
			if accepted > 1 && t.ShouldTransmit {
				_, err := transmitter.Transmit(ctx(), &pb.TransmitRequest{
					ReportContext: &pb.ReportContext{ReportTimestamp: ts}, Report: rep.Report,
				})
				must(err, "Transmit")
				out["transmitted"] = true
			}
		}
		line, _ := json.Marshal(out)
		fmt.Println(string(line))
	}
	latest, err := contract.LatestTransmissionDetails(ctx(), &pb.LatestTransmissionDetailsRequest{})
	must(err, "LatestTransmissionDetails")
	answer := new(big.Int).SetBytes(latest.LatestAnswer.GetValue())
	line, _ = json.Marshal(map[string]interface{}{"final": true, "epoch": latest.Epoch, "answer": answer.String()})
	fmt.Println(string(line))
	_ = golang.Service{}
}
