package main

import (
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// style of each system's line, the same in every plot.
var lineColor = map[string]color.Color{
	"A":       color.RGBA{R: 150, G: 150, B: 150, A: 255},
	"B-off":   color.RGBA{R: 140, G: 190, B: 230, A: 255},
	"B":       color.RGBA{R: 31, G: 119, B: 180, A: 255},
	"C":       color.RGBA{R: 255, G: 127, B: 14, A: 255},
	"C-batch": color.RGBA{R: 140, G: 86, B: 75, A: 255},
	"D":       color.RGBA{R: 44, G: 160, B: 44, A: 255},
	"limit":   color.Black,
	// The gRPC systems take their HTTP counterpart's colour, dotted.
	"A-grpc": color.RGBA{R: 150, G: 150, B: 150, A: 255},
	"B-grpc": color.RGBA{R: 31, G: 119, B: 180, A: 255},
	"C-grpc": color.RGBA{R: 255, G: 127, B: 14, A: 255},
	"D-grpc": color.RGBA{R: 44, G: 160, B: 44, A: 255},
}

// writePlots draws, into c.out, received spans per second through each
// time-based scenario (one line per system) and, for the first backlog
// round, the backlog and the disk it takes over time. It returns the file
// names written, by scenario.
func writePlots(c config, rep *report) (map[string][]string, error) {
	files := map[string][]string{}
	byScenario := map[string][]*result{}
	for _, r := range rep.Results {
		byScenario[r.Scenario] = append(byScenario[r.Scenario], r)
	}
	for _, s := range allScenarios {
		rs := byScenario[s]
		if len(rs) == 0 {
			continue
		}
		if s == "backlog" {
			names, err := backlogPlots(c, rs)
			if err != nil {
				return nil, err
			}
			files[s] = names
			continue
		}
		if s == "latency" {
			const name = "latency.png"
			if err := latencyPlot(rs, rep.Settings, filepath.Join(c.out, name)); err != nil {
				return nil, err
			}
			files[s] = []string{name}
			continue
		}
		var first []*result // the steady run is repeated; its first round is drawn
		for _, r := range rs {
			if r.Round <= 1 {
				first = append(first, r)
			}
		}
		name := "received-" + s + ".png"
		if err := receivedPlot(c, s, first, filepath.Join(c.out, name)); err != nil {
			return nil, err
		}
		files[s] = []string{name}
		if s != "steady" {
			name := "waiting-" + s + ".png"
			if err := waitingPlot(c, s, first, filepath.Join(c.out, name)); err != nil {
				return nil, err
			}
			files[s] = append(files[s], name)
		}
	}
	return files, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

func addLine(p *plot.Plot, sys string, xys plotter.XYs) error {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = lineColor[sys]
	// Where B, D and the limit coincide (they often do), B's wider line
	// stays visible under D's, and the limit is dashed over both; the
	// gRPC systems are dotted, B-grpc wider than D-grpc for the same
	// reason.
	switch {
	case sys == "B":
		l.Width = vg.Points(3)
	case sys == "limit":
		l.Width = vg.Points(1.2)
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	case sys == "B-grpc":
		l.Width = vg.Points(3.5)
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2.5)}
	case isGRPC(sys):
		l.Width = vg.Points(2)
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2.5)}
	default:
		l.Width = vg.Points(1.5)
	}
	p.Add(l)
	p.Legend.Add(systemLabel[sys], l)
	return nil
}

// receivedPlot: distinct spans received per second, from the 250 ms
// samples, in one-second steps.
func receivedPlot(c config, scenario string, rs []*result, path string) error {
	title := "Steady load: spans received per second"
	if scenario != "steady" {
		title = "Outage (" + outageText(scenario, rs) + "): spans received per second"
	}
	p := newPlot(title, "seconds since the load started", "spans received per second")
	// Headroom above the lines for the legend.
	top := float64(c.rate)
	for _, r := range rs {
		top = max(top, maxRate(r.Series))
	}
	top *= 1.45
	p.Y.Max = top
	if scenario != "steady" {
		if err := shadeOutage(p, c, top); err != nil {
			return err
		}
	}
	for _, r := range rs {
		if err := addLine(p, r.System, perSecond(r.Series)); err != nil {
			return err
		}
	}
	p.Y.Min = 0
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}

// waitingPlot: spans produced and not yet received, over time: the
// backlog each system holds through the outage, and how long it keeps it.
// A's line stays up: what it lost.
func waitingPlot(c config, scenario string, rs []*result, path string) error {
	p := newPlot("Outage ("+outageText(scenario, rs)+"): spans produced, not yet received",
		"seconds since the load started", "spans waiting (or lost)")
	top := 1.0
	lines := map[string]plotter.XYs{}
	for _, r := range rs {
		var xys plotter.XYs
		for _, s := range r.Series {
			xys = append(xys, plotter.XY{X: s.T, Y: float64(max(0, s.Produced-s.Received))})
			top = max(top, xys[len(xys)-1].Y)
		}
		lines[r.System] = xys
	}
	top *= 1.45
	if err := shadeOutage(p, c, top); err != nil {
		return err
	}
	for _, r := range rs {
		if err := addLine(p, r.System, lines[r.System]); err != nil {
			return err
		}
	}
	p.Y.Min, p.Y.Max = 0, top
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}

// perSecond turns the cumulative received counts into a rate per second,
// each point at the end of its second.
func perSecond(ss []sample) plotter.XYs {
	if len(ss) == 0 {
		return nil
	}
	var xys plotter.XYs
	last := ss[len(ss)-1].T
	j := 0
	prev := int64(0)
	for sec := 1.0; sec <= math.Floor(last); sec++ {
		for j+1 < len(ss) && ss[j+1].T <= sec {
			j++
		}
		xys = append(xys, plotter.XY{X: sec, Y: float64(ss[j].Received - prev)})
		prev = ss[j].Received
	}
	return xys
}

func maxRate(ss []sample) float64 {
	m := 0.0
	for _, xy := range perSecond(ss) {
		m = max(m, xy.Y)
	}
	return m
}

// backlogPlots: for round 1, the spans handed to each layer and not yet
// received, and the disk the backlog takes, over time, with 0 at the
// endpoint's return.
func backlogPlots(c config, rs []*result) ([]string, error) {
	waiting := newPlot("Backlog: spans exported by the application, not yet received",
		"seconds since the endpoint came back (negative: building the backlog)", "spans waiting")
	disk := newPlot("Backlog: bytes on disk", "seconds since the endpoint came back (negative: building the backlog)", "MiB on disk")
	var maxW, maxD float64
	for _, r := range rs {
		if r.Round != 1 || r.System == "A" { // A hands nothing over: its exports fail
			continue
		}
		var w, d plotter.XYs
		for _, s := range r.Series {
			x := s.T - r.BackAt
			w = append(w, plotter.XY{X: x, Y: float64(max(0, s.Handed-s.Received))})
			maxW = max(maxW, w[len(w)-1].Y)
			if s.Disk >= 0 && (r.System == "B" || r.System == "C" || r.System == "D") {
				d = append(d, plotter.XY{X: x, Y: float64(s.Disk) / (1 << 20)})
				maxD = max(maxD, d[len(d)-1].Y)
			}
		}
		if err := addLine(waiting, r.System, w); err != nil {
			return nil, err
		}
		if err := addLine(disk, r.System, d); err != nil {
			return nil, err
		}
	}
	waiting.Y.Min, disk.Y.Min = 0, 0
	waiting.Y.Max, disk.Y.Max = max(1, maxW*1.45), max(1, maxD*1.45)
	names := []string{"backlog.png", "backlog-disk.png"}
	if err := waiting.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(c.out, names[0])); err != nil {
		return nil, err
	}
	if err := disk.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(c.out, names[1])); err != nil {
		return nil, err
	}
	return names, nil
}

// shadeOutage shades the outage, the middle third of the run, up to top.
func shadeOutage(p *plot.Plot, c config, top float64) error {
	o := c.outage.Seconds()
	poly, err := plotter.NewPolygon(plotter.XYs{{X: o, Y: 0}, {X: 2 * o, Y: 0}, {X: 2 * o, Y: top}, {X: o, Y: top}})
	if err != nil {
		return err
	}
	poly.Color = color.RGBA{R: 255, G: 220, B: 220, A: 255}
	poly.LineStyle.Width = 0
	p.Add(poly)
	p.Legend.Add("outage", poly)
	return nil
}

// latencyPlot: each system's drain rate (exports per second, the median
// of the rounds) against the round trip, on a logarithmic scale: one
// export per request and merged requests differ by orders of magnitude.
// Loopback is drawn at 0 ms; a system that never drained has no point.
func latencyPlot(rs []*result, s settings, path string) error {
	p := newPlot("Backlog drain rate against round-trip time", "round trip, ms (0: loopback)", "exports per second (log scale)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	rtts, groups := byRTT(rs)
	lines := map[string]plotter.XYs{}
	lo, hi := math.Inf(1), 0.0
	for _, x := range rtts {
		for _, row := range backlogRows(groups[x], s) {
			if row.undrained || row.rate <= 0 {
				continue
			}
			lines[row.sys] = append(lines[row.sys], plotter.XY{X: 1000 * x, Y: row.rate})
			lo, hi = min(lo, row.rate), max(hi, row.rate)
		}
	}
	for _, sys := range knownSystems {
		xys := lines[sys]
		if err := addLine(p, sys, xys); err != nil {
			return err
		}
		if len(xys) > 0 {
			pts, err := plotter.NewScatter(xys)
			if err != nil {
				return err
			}
			pts.Color = lineColor[sys]
			p.Add(pts)
		}
	}
	if hi > 0 {
		// Room above the lines for the legend: a decade and a half.
		p.Y.Min, p.Y.Max = lo/2, hi*30
	}
	p.X.Min = 0
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}
