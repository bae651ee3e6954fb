// Command gogolden writes the bytes Go makes of libocr's numerical median
// encodings, for loopp's golden-vector test: the messages come from Go code
// generated from loopp's proto/median_offchain.proto and are marshaled by
// the Go protobuf runtime; int192 values are encoded with math/big.
//
// Input: one JSON case per line on stdin; output: one line of hex per case
// (or "error: ..." for a value Go cannot encode).
//
//	{"kind":"observation","timestamp":1,"value":"-5","juels":"1","gas":"7"}   (gas may be null)
//	{"kind":"offchain","alphaReportInfinite":false,"alphaReportPpb":1,"alphaAcceptInfinite":false,"alphaAcceptPpb":2,"deltaCNanoseconds":3}
//	{"kind":"onchain","min":"-1","max":"1"}
//	{"kind":"sort","keys":[3,1,3,...]}   -> the indices in sort.Slice's order, comma-separated
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	_ "loopp/golang" // the codec registration is harmless here
	"loopp/pb"
)

type testCase struct {
	Kind                string  `json:"kind"`
	Timestamp           uint32  `json:"timestamp"`
	Value               string  `json:"value"`
	Juels               string  `json:"juels"`
	Gas                 *string `json:"gas"`
	AlphaReportInfinite bool    `json:"alphaReportInfinite"`
	AlphaReportPpb      uint64  `json:"alphaReportPpb"`
	AlphaAcceptInfinite bool    `json:"alphaAcceptInfinite"`
	AlphaAcceptPpb      uint64  `json:"alphaAcceptPpb"`
	DeltaCNanoseconds   uint64  `json:"deltaCNanoseconds"`
	Min                 string  `json:"min"`
	Max                 string  `json:"max"`
	Keys                []int64 `json:"keys"`
}

var (
	two192 = new(big.Int).Lsh(big.NewInt(1), 192)
	maxI   = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 191), big.NewInt(1))
	minI   = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 191))
)

// int192 as 24 bytes, big-endian two's complement.
func int192(s string) ([]byte, error) {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("%q is not an integer", s)
	}
	if v.Cmp(maxI) > 0 || v.Cmp(minI) < 0 {
		return nil, fmt.Errorf("%s is out of int192 range", s)
	}
	if v.Sign() < 0 {
		v.Add(v, two192)
	}
	return v.FillBytes(make([]byte, 24)), nil
}

func encode(c testCase) ([]byte, error) {
	switch c.Kind {
	case "observation":
		value, err := int192(c.Value)
		if err != nil {
			return nil, err
		}
		juels, err := int192(c.Juels)
		if err != nil {
			return nil, err
		}
		var gas []byte
		if c.Gas != nil {
			if gas, err = int192(*c.Gas); err != nil {
				return nil, err
			}
		}
		return proto.Marshal(&pb.NumericalMedianObservationProto{
			Timestamp: c.Timestamp, Value: value, JuelsPerFeeCoin: juels, GasPriceSubunits: gas,
		})
	case "offchain":
		return proto.Marshal(&pb.NumericalMedianConfigProto{
			AlphaReportInfinite: c.AlphaReportInfinite, AlphaReportPpb: c.AlphaReportPpb,
			AlphaAcceptInfinite: c.AlphaAcceptInfinite, AlphaAcceptPpb: c.AlphaAcceptPpb,
			DeltaCNanoseconds: c.DeltaCNanoseconds,
		})
	case "onchain":
		min, err := int192(c.Min)
		if err != nil {
			return nil, err
		}
		max, err := int192(c.Max)
		if err != nil {
			return nil, err
		}
		return append(append([]byte{1}, min...), max...), nil
	}
	return nil, fmt.Errorf("unknown kind %q", c.Kind)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		var c testCase
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			fmt.Printf("error: %v\n", err)
			continue
		}
		if c.Kind == "sort" {
			idx := make([]int, len(c.Keys))
			for i := range idx {
				idx[i] = i
			}
			sort.Slice(idx, func(i, j int) bool { return c.Keys[idx[i]] < c.Keys[idx[j]] })
			out := make([]string, len(idx))
			for i, v := range idx {
				out[i] = strconv.Itoa(v)
			}
			fmt.Println(strings.Join(out, ","))
			continue
		}
		b, err := encode(c)
		if err != nil {
			fmt.Printf("error: %v\n", err)
			continue
		}
		fmt.Println(hex.EncodeToString(b))
	}
}
