// Command gomedian plays a Go Chainlink median LOOPP at its entry points,
// for loopp's drop-in tests:
//
//   - it needs the Go LOOP environment, as chainlink-common's plugins do;
//   - PluginMedian.NewMedianFactory dials DataSource, JuelsPerFeeCoin
//     DataSource, GasPriceSubunits DataSource, MedianProvider and ErrorLog in
//     chainlink-common's order, with its error text, and decodes the
//     deviation function definition as JSON;
//   - its reporting plugins run numerical-median rounds with libocr's
//     encodings: the NumericalMedianObservationProto of all three sources,
//     a report from the valid observations sorted by value, built by the
//     provider's ReportCodec; accept and transmit reports newer than the
//     contract's latest under its config.
//
// Its decisions are deliberately simple (report every round); what it checks
// is the wire: services, ids, messages and encodings.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"loopp/golang"
	"loopp/pb"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  0,
	MagicCookieKey:   "CL_PLUGIN_MEDIAN_MAGIC_COOKIE",
	MagicCookieValue: "b12a697e19748cd695dd1690c09745ee7cc03717179958e8eadd5a7ca4646728",
}

const callTimeout = 5 * time.Second

var logger hclog.Logger

type pluginMedian struct {
	pb.UnimplementedPluginMedianServer
	broker *plugin.GRPCBroker
}

func (p *pluginMedian) dial(name string, id uint32) (*grpc.ClientConn, error) {
	conn, err := p.broker.Dial(id)
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s client connection %d: %w", name, id, err)
	}
	return conn, nil
}

func (p *pluginMedian) NewMedianFactory(ctx context.Context, req *pb.NewMedianFactoryRequest) (*pb.NewMedianFactoryReply, error) {
	var conns [5]*grpc.ClientConn
	for i, d := range []struct {
		name string
		id   uint32
	}{
		{"DataSource", req.DataSourceID},
		{"JuelsPerFeeCoinDataSource", req.JuelsPerFeeCoinDataSourceID},
		{"GasPriceSubunitsDataSource", req.GasPriceSubunitsDataSourceID},
		{"MedianProvider", req.MedianProviderID},
		{"ErrorLog", req.ErrorLogID},
	} {
		conn, err := p.dial(d.name, d.id)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return nil, err
		}
		conns[i] = conn
	}
	if len(req.DeviationFuncDefinition) > 0 {
		var def map[string]interface{}
		if err := json.Unmarshal(req.DeviationFuncDefinition, &def); err != nil {
			return nil, fmt.Errorf("failed to unmarshal deviationFuncDefinition: %w", err)
		}
	}
	f := &factory{
		broker:   p.broker,
		sources:  [3]pb.DataSourceClient{pb.NewDataSourceClient(conns[0]), pb.NewDataSourceClient(conns[1]), pb.NewDataSourceClient(conns[2])},
		codec:    pb.NewReportCodecClient(conns[3]),
		contract: pb.NewMedianContractClient(conns[3]),
	}
	logger.Info(fmt.Sprintf("NewMedianFactory ok: contract %q, 5 services dialed", req.ContractID))
	id := p.broker.NextId()
	go p.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterServiceServer(s, &golang.Service{ServiceName: "gomedian.Factory"})
		pb.RegisterReportingPluginFactoryServer(s, f)
		return s
	})
	return &pb.NewMedianFactoryReply{ReportingPluginFactoryID: id}, nil
}

type factory struct {
	pb.UnimplementedReportingPluginFactoryServer
	broker   *plugin.GRPCBroker
	sources  [3]pb.DataSourceClient
	codec    pb.ReportCodecClient
	contract pb.MedianContractClient
}

func (f *factory) NewReportingPlugin(ctx context.Context, req *pb.NewReportingPluginRequest) (*pb.NewReportingPluginReply, error) {
	cfg := req.ReportingPluginConfig
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	max, err := f.codec.MaxReportLength(ctx, &pb.MaxReportLengthRequest{N: int64(cfg.N)})
	if err != nil {
		return nil, fmt.Errorf("MaxReportLength: %w", err)
	}
	r := &reporting{factory: f, f: int(cfg.F), digest: cfg.ConfigDigest}
	id := f.broker.NextId()
	go f.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterServiceServer(s, &golang.Service{ServiceName: "gomedian.ReportingPlugin"})
		pb.RegisterReportingPluginServer(s, r)
		return s
	})
	return &pb.NewReportingPluginReply{
		ReportingPluginID: id,
		ReportingPluginInfo: &pb.ReportingPluginInfo{
			Name: "NumericalMedian",
			ReportingPluginLimits: &pb.ReportingPluginLimits{
				MaxQueryLength: 0, MaxObservationLength: 92, MaxReportLength: uint64(max.Max),
			},
		},
	}, nil
}

type reporting struct {
	pb.UnimplementedReportingPluginServer
	*factory
	f      int
	digest []byte
	mu     sync.Mutex
}

var (
	two192 = new(big.Int).Lsh(big.NewInt(1), 192)
	two191 = new(big.Int).Lsh(big.NewInt(1), 191)
)

func toInt(b *pb.BigInt) *big.Int {
	v := new(big.Int).SetBytes(b.GetValue())
	if b.GetNegative() {
		v.Neg(v)
	}
	return v
}

func toBig(v *big.Int) *pb.BigInt {
	return &pb.BigInt{Negative: v.Sign() < 0, Value: new(big.Int).Abs(v).Bytes()}
}

// int192 as 24 bytes, big-endian two's complement.
func encode192(v *big.Int) []byte {
	w := new(big.Int).Set(v)
	if w.Sign() < 0 {
		w.Add(w, two192)
	}
	return w.FillBytes(make([]byte, 24))
}

func decode192(b []byte) (*big.Int, error) {
	if len(b) != 24 {
		return nil, fmt.Errorf("int192 of %d bytes", len(b))
	}
	v := new(big.Int).SetBytes(b)
	if v.Cmp(two191) >= 0 {
		v.Sub(v, two192)
	}
	return v, nil
}

func (r *reporting) Query(context.Context, *pb.QueryRequest) (*pb.QueryReply, error) {
	return &pb.QueryReply{}, nil
}

func (r *reporting) Observation(ctx context.Context, req *pb.ObservationRequest) (*pb.ObservationReply, error) {
	var values [3]*big.Int
	for i, s := range r.sources {
		reply, err := s.Observe(ctx, &pb.ObserveRequest{ReportTimestamp: req.ReportTimestamp})
		if err != nil {
			return nil, fmt.Errorf("data source %d: %w", i, err)
		}
		values[i] = toInt(reply.Value)
	}
	b, err := proto.Marshal(&pb.NumericalMedianObservationProto{
		Timestamp:        uint32(time.Now().Unix()),
		Value:            encode192(values[0]),
		JuelsPerFeeCoin:  encode192(values[1]),
		GasPriceSubunits: encode192(values[2]),
	})
	if err != nil {
		return nil, err
	}
	return &pb.ObservationReply{Observation: b}, nil
}

func (r *reporting) Report(ctx context.Context, req *pb.ReportRequest) (*pb.ReportReply, error) {
	var paos []*pb.ParsedAttributedObservation
	for _, ao := range req.Observations {
		var o pb.NumericalMedianObservationProto
		if err := proto.Unmarshal(ao.Observation, &o); err != nil {
			continue
		}
		value, err1 := decode192(o.Value)
		juels, err2 := decode192(o.JuelsPerFeeCoin)
		gas := big.NewInt(0)
		var err3 error
		if len(o.GasPriceSubunits) > 0 {
			gas, err3 = decode192(o.GasPriceSubunits)
		}
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		paos = append(paos, &pb.ParsedAttributedObservation{
			Timestamp: o.Timestamp, Value: toBig(value), JulesPerFeeCoin: toBig(juels),
			GasPriceSubunits: toBig(gas), Observer: ao.Observer,
		})
	}
	if len(paos) <= r.f {
		return nil, fmt.Errorf("only %d valid observations", len(paos))
	}
	sort.SliceStable(paos, func(i, j int) bool {
		return toInt(paos[i].Value).Cmp(toInt(paos[j].Value)) < 0
	})
	built, err := r.codec.BuildReport(ctx, &pb.BuildReportRequest{Observations: paos})
	if err != nil {
		return nil, fmt.Errorf("BuildReport: %w", err)
	}
	return &pb.ReportReply{ShouldReport: true, Report: built.Report}, nil
}

// newer: whether the report's (epoch, round) is past the contract's latest
// under this plugin's config.
func (r *reporting) newer(ctx context.Context, ts *pb.ReportTimestamp) (bool, error) {
	latest, err := r.contract.LatestTransmissionDetails(ctx, &pb.LatestTransmissionDetailsRequest{})
	if err != nil {
		return false, err
	}
	if len(latest.ConfigDigest) != 32 {
		return false, fmt.Errorf("expected ConfigDigest length 32 but got %d", len(latest.ConfigDigest))
	}
	if latest.LatestAnswer == nil {
		return false, fmt.Errorf("latestAnswer is nil")
	}
	if string(latest.ConfigDigest) != string(r.digest) {
		return false, nil
	}
	return ts.Epoch > latest.Epoch || (ts.Epoch == latest.Epoch && ts.Round > latest.Round), nil
}

func (r *reporting) ShouldAcceptFinalizedReport(ctx context.Context, req *pb.ShouldAcceptFinalizedReportRequest) (*pb.ShouldAcceptFinalizedReportReply, error) {
	ok, err := r.newer(ctx, req.ReportTimestamp)
	if err != nil {
		return nil, err
	}
	return &pb.ShouldAcceptFinalizedReportReply{ShouldAccept: ok}, nil
}

func (r *reporting) ShouldTransmitAcceptedReport(ctx context.Context, req *pb.ShouldTransmitAcceptedReportRequest) (*pb.ShouldTransmitAcceptedReportReply, error) {
	ok, err := r.newer(ctx, req.ReportTimestamp)
	if err != nil {
		return nil, err
	}
	return &pb.ShouldTransmitAcceptedReportReply{ShouldTransmit: ok}, nil
}

func (r *reporting) Close(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

type medianPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (medianPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterServiceServer(s, &golang.Service{ServiceName: "gomedian"})
	pb.RegisterPluginMedianServer(s, &pluginMedian{broker: broker})
	return nil
}

func (medianPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, fmt.Errorf("gomedian only serves")
}

func main() {
	logger = golang.Start("gomedian")
	golang.Serve(handshake, plugin.PluginSet{"median": medianPlugin{}}, logger)
}
