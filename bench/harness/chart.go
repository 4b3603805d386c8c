package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Colors of the generators in the chart; csprng stands out.
var colors = map[string]string{
	genCsprng:     "#d62728",
	genCsprngRand: "#ff7f0e",
	genCrypto:     "#1f77b4",
	genMathGlobal: "#2ca02c",
	genChaCha8:    "#9467bd",
	genXChaCha:    "#8c564b",
}

var order = []string{genCsprng, genCsprngRand, genMathGlobal, genChaCha8, genCrypto, genXChaCha}

// svg draws three panels: how each goal stands against its target, the
// cost of one Uint64 per generator, and read throughput by size.
func (rep *report) svg() string {
	const width = 1060
	var b strings.Builder
	y := 0
	body := func(f func(*strings.Builder, int) int) { y = f(&b, y) }
	body(rep.goalPanel)
	body(rep.uint64Panel)
	body(rep.throughputPanel)
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n"+
		`<rect width="100%%" height="100%%" fill="white"/>`+"\n%s</svg>\n", width, y+20, b.String())
}

func text(b *strings.Builder, x, y int, anchor, s string, extra string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, extra, html.EscapeString(s))
}

// goalPanel: one bar per goal, as a share of its budget (1 = exactly at the
// goal; shorter is better), green when met, red when missed.
func (rep *report) goalPanel(b *strings.Builder, y int) int {
	const left, barMax, rowH = 360, 480, 22
	y += 30
	text(b, 20, y, "start", fmt.Sprintf("Goals — measured as a share of the budget (the line is the goal; %s, %s)", rep.cpu, rep.goVersion), `font-size="15" font-weight="bold"`)
	y += 16
	top := y
	scale := func(v float64) int { return int(math.Min(v, 2) / 2 * barMax) }
	for _, g := range rep.goals {
		share := g.value / g.target
		if g.atLeast {
			share = g.target / g.value
		}
		if g.target == 0 {
			share = 0
			if g.value > 0 {
				share = 2
			}
		}
		color := "#2ca02c"
		if !g.ok {
			color = "#d62728"
		}
		text(b, left-8, y+15, "end", g.name, "")
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y+3, max(scale(share), 2), rowH-6, color)
		text(b, left+max(scale(share), 2)+6, y+15, "start", g.String(), `fill="#333"`)
		y += rowH
	}
	x1 := left + scale(1)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-dasharray="4 3"/>`+"\n", x1, top, x1, y)
	text(b, x1, y+14, "middle", "goal", `fill="#333"`)
	return y + 20
}

// uint64Panel: ns per Uint64, single and parallel, per generator.
func (rep *report) uint64Panel(b *strings.Builder, y int) int {
	const left, barMax, rowH = 360, 480, 20
	y += 30
	text(b, 20, y, "start", "One Uint64 — ns per call (shorter is faster)", `font-size="15" font-weight="bold"`)
	y += 10
	var most float64
	for _, r := range rep.results {
		if strings.HasPrefix(r.op, "Uint64") {
			most = math.Max(most, r.ns)
		}
	}
	for _, op := range []string{"Uint64", "Uint64 parallel"} {
		for _, r := range rep.byOp(op) {
			w := int(r.ns / most * barMax)
			text(b, left-8, y+14, "end", r.gen+" "+strings.TrimPrefix(op, "Uint64"), "")
			fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y+3, max(w, 2), rowH-6, colors[r.gen])
			text(b, left+max(w, 2)+6, y+14, "start", fmt.Sprintf("%.2f ns", r.ns), `fill="#333"`)
			y += rowH
		}
		y += 6
	}
	return y
}

// throughputPanel: read throughput by request size, grouped bars on a log
// scale, one colour per generator.
func (rep *report) throughputPanel(b *strings.Builder, y int) int {
	const left, plotW, plotH = 80, 760, 260
	y += 30
	text(b, 20, y, "start", "Read — throughput by request size (MB/s, log scale; taller is faster)", `font-size="15" font-weight="bold"`)
	y += 20
	top, bottom := y, y+plotH
	lo, hi := 10.0, 10000.0
	ypos := func(v float64) int {
		v = math.Max(v, lo)
		return bottom - int((math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*plotH)
	}
	for v := lo; v <= hi; v *= 10 {
		yy := ypos(v)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", left, yy, left+plotW, yy)
		text(b, left-6, yy+4, "end", fmt.Sprintf("%.0f", v), `fill="#666"`)
	}
	groupW := plotW / len(readSizes)
	barW := (groupW - 20) / len(order)
	for i, n := range readSizes {
		op := fmt.Sprintf("Read %d", n)
		x := left + i*groupW + 10
		for _, gen := range order {
			if r, ok := rep.find(gen, op); ok {
				yy := ypos(r.mbps())
				fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %s: %.0f MB/s</title></rect>`+"\n",
					x, yy, barW-2, bottom-yy, colors[gen], gen, op, r.mbps())
			}
			x += barW
		}
		label := fmt.Sprintf("%d B", n)
		if n >= 1024 {
			label = fmt.Sprintf("%d KiB", n/1024)
		}
		text(b, left+i*groupW+groupW/2, bottom+16, "middle", label, "")
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, bottom, left+plotW, bottom)
	_ = top
	y = bottom + 36
	x := left
	for _, gen := range order {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, y-10, colors[gen])
		text(b, x+16, y, "start", gen, "")
		x += 16 + 8*len(gen) + 20
	}
	return y + 10
}
