package main

// go-agent client SIDE-SPEC.json: the grpc-go client side of bench.unary
// --fleet's separate-process mode (what a Go poller would do): one channel
// per agent (root = the agent's tenant CA, the poller's certificate, server
// name = the agent's CN), `rounds` rounds of one concurrent GetStatus to
// every agent after `warmup` rounds, each request built and each answer
// decoded per call. One JSON line on stdout, the shape bench.fleet_side
// prints.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"
)

type sideSpec struct {
	Certs  string `json:"certs"`
	Rounds int    `json:"rounds"`
	Warmup int    `json:"warmup"`
	Agents []struct {
		Address   string `json:"address"`
		Tenant    string `json:"tenant"`
		Component string `json:"component"`
		CN        string `json:"cn"`
	} `json:"agents"`
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func statusRequest(component string) []byte {
	out := make([]byte, 0, 64)
	for i, v := range []string{"nginx", "process", component, "bench"} {
		out = protowire.AppendTag(out, protowire.Number(i+1), protowire.BytesType)
		out = protowire.AppendString(out, v)
	}
	return out
}

// available (field 1) of a StatusResponse, every other field walked over.
func available(b []byte) bool {
	ok := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false
			}
			ok = v == 1
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return ok
}

func runClient(path string) {
	raw, err := ioutil.ReadFile(path)
	die(err)
	var s sideSpec
	die(json.Unmarshal(raw, &s))
	registerRawCodec()
	pollerCert, err := tls.LoadX509KeyPair(filepath.Join(s.Certs, "poller-chain.pem"), filepath.Join(s.Certs, "poller-key.pem"))
	die(err)
	pools := map[string]*x509.CertPool{}
	rss0 := rssMiB()
	started := time.Now()
	cpu0 := cpuSeconds()
	conns := make([]*grpc.ClientConn, len(s.Agents))
	for i, a := range s.Agents {
		pool, ok := pools[a.Tenant]
		if !ok {
			pem, err := ioutil.ReadFile(filepath.Join(s.Certs, "tenants", a.Tenant, "ca.pem"))
			die(err)
			pool = x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			pools[a.Tenant] = pool
		}
		creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pollerCert}, ServerName: a.CN})
		conns[i], err = grpc.Dial(a.Address, grpc.WithTransportCredentials(creds))
		die(err)
	}
	round := func() (float64, float64, int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := 0
		c0, t0 := cpuSeconds(), time.Now()
		for i := range conns {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				out := &frame{}
				err := conns[i].Invoke(ctx, "/monitoring.AgentService/GetStatus", &frame{b: statusRequest(s.Agents[i].Component)}, out)
				if err != nil || !available(out.b) {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		return time.Since(t0).Seconds(), cpuSeconds() - c0, failed
	}
	_, _, failed := round()
	firstWave := time.Since(started).Seconds()
	firstCPU := cpuSeconds() - cpu0
	for w := 1; w < s.Warmup; w++ {
		round()
	}
	rss1 := rssMiB()
	n := float64(len(conns))
	var rates, cpuUs []float64
	for r := 0; r < s.Rounds; r++ {
		wall, cpu, bad := round()
		failed += bad
		rates = append(rates, n/wall)
		cpuUs = append(cpuUs, cpu/n*1e6)
	}
	for _, c := range conns {
		c.Close()
	}
	line, _ := json.Marshal(map[string]interface{}{
		"variant":           "go-client",
		"agents":            len(conns),
		"first_wave":        firstWave,
		"first_wave_cpu":    firstCPU,
		"rates":             rates,
		"cpu_us":            cpuUs,
		"gc_us":             nil,
		"objects_per_agent": nil,
		"rss_kib_per_agent": (rss1 - rss0) * 1024 / n,
		"failed":            failed,
	})
	fmt.Println(string(line))
}
