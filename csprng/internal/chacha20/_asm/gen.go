// Command _asm generates chacha20_amd64.s and its Go declarations,
// chacha20_amd64_stubs.go, with avo. It lives in a module of its own so that
// users of snapsafe never depend on avo. Run it through go generate in the
// parent folder:
//
//	go generate ./csprng/internal/chacha20
//
// # Layout
//
// Both kernels compute many ChaCha20 blocks side by side, one block per vector
// lane ("vertical" layout): vector register i holds state word i of every
// block, so lane j of register 12 holds block j's counter and one vector
// instruction performs the same step of the same quarter-round for all blocks.
// Lanes differ only in the counter row, which starts as counter+0, counter+1, …
//
// After the 20 rounds and the feed-forward addition the registers are
// transposed so that each block's 16 words become contiguous, and are stored
// to out in block order. The transposition runs in three steps (see
// transpose4): interleave 32-bit words of register pairs, then 64-bit pairs,
// which leaves words 4g…4g+3 of block 4L+k in 128-bit lane L of register
// R[g][k]; then 128-bit lanes are gathered (VSHUFI32X4, VPERM2I128) into whole
// blocks (ZMM), half blocks (YMM) or, in XMM, lane 0 is already a quarter block.
//
// A kernel that computes w blocks at a time but is asked for fewer stores only
// the blocks asked for: it compares the number of blocks left before storing
// each block and leaves at the first one not wanted, so nothing is written
// past len(out). Before returning, the kernels zero the vector registers and
// the AVX2 kernel's stack scratch (which holds spilled state words), so that
// no key or keystream outlives the call outside out: the generator built on
// them erases its keys and relies on that.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

const signature = "func(out []byte, key *[32]byte, nonce *[12]byte, counter uint32)"

// Read-only data, laid out the way the vector instructions read it.
var (
	sigma   Mem // the four constant words, "expand 32-byte k" in little-endian
	lanes   Mem // 0, 1, …, 15: lane j of the counter row starts at counter+j
	rot16   Mem // VPSHUFB control (per 128-bit lane): rotate each 32-bit word left by 16
	rot8    Mem // VPSHUFB control (per 128-bit lane): rotate each 32-bit word left by 8
	sixteen Mem // 16: the counter step of the 16-block AVX-512 loop
	eight   Mem // 8: the counter step of the 8-block AVX2 loop
)

// General-purpose registers, the same in both kernels.
var (
	outp   = Mem{Base: RDI} // next block of out
	left   = RCX            // blocks of out still to write
	keyp   = Mem{Base: RSI} // key words 0…7
	noncep = Mem{Base: RDX} // nonce words 0…2 (state words 13…15)
	rounds = RAX            // double rounds still to do
)

// The quarter-rounds of one double round, as state word indices (a, b, c, d).
var (
	columns   = [4][4]int{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}
	diagonals = [4][4]int{{0, 5, 10, 15}, {1, 6, 11, 12}, {2, 7, 8, 13}, {3, 4, 9, 14}}
)

// qrSteps is one quarter-round (RFC 8439, section 2.1) as four steps
// "x[p] += x[q]; x[r] ^= x[p]; x[r] <<<= rot", with p, q, r indexing (a, b, c, d).
var qrSteps = []struct{ p, q, r, rot int }{
	{0, 1, 3, 16}, // a += b; d ^= a; d <<<= 16
	{2, 3, 1, 12}, // c += d; b ^= c; b <<<= 12
	{0, 1, 3, 8},  // a += b; d ^= a; d <<<= 8
	{2, 3, 1, 7},  // c += d; b ^= c; b <<<= 7
}

func main() {
	ConstraintExpr("amd64,!purego")
	data()
	avx512()
	avx2()
	Generate()
}

func data() {
	sigma = GLOBL("sigma", RODATA|NOPTR)
	for i, w := range []uint32{0x61707865, 0x3320646e, 0x79622d32, 0x6b206574} {
		DATA(4*i, U32(w))
	}
	lanes = GLOBL("lanes", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(uint32(i)))
	}
	// VPSHUFB picks, for each destination byte, a source byte of the same
	// 128-bit lane; rotating a little-endian word left by 8k bits moves its
	// byte i to byte (i+k) mod 4, so destination byte i takes byte (i-k) mod 4.
	rot16 = rotation("rot16", 2)
	rot8 = rotation("rot8", 1)
	sixteen = GLOBL("sixteen", RODATA|NOPTR)
	DATA(0, U32(16))
	eight = GLOBL("eight", RODATA|NOPTR)
	DATA(0, U32(8))
}

// rotation defines a 32-byte VPSHUFB control that rotates every 32-bit word
// left by 8k bits.
func rotation(name string, k int) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(i&^3&15+(i-k)&3))
	}
	return m
}

// view returns vector register i at width w blocks of 32-bit lanes: a ZMM for
// 16, a YMM for 8, an XMM for 4.
func view(i, w int) VecPhysical {
	z := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
		Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}[i]
	switch w {
	case 16:
		return z
	case 8:
		return z.AsY().(VecPhysical)
	default:
		return z.AsX().(VecPhysical)
	}
}

// pool hands out free vector registers to the transposition, which turns two
// inputs into two outputs at a time and so needs only two spare registers.
type pool []Register

func (p *pool) get() Register {
	if len(*p) == 0 {
		panic("no free vector register")
	}
	r := (*p)[0]
	*p = (*p)[1:]
	return r
}

func (p *pool) put(rs ...Register) { *p = append(*p, rs...) }

// transpose4 takes the registers holding state words 4g…4g+3 and returns
// R[k], k = 0…3, whose 128-bit lane L holds words 4g…4g+3 of block 4L+k.
// The inputs go back to the pool.
func transpose4(x []Register, p *pool) [4]Register {
	// Interleave 32-bit words: lo01 lane L = x0[4L] x1[4L] x0[4L+1] x1[4L+1],
	// hi01 lane L = x0[4L+2] x1[4L+2] x0[4L+3] x1[4L+3]; likewise for x2, x3.
	lo01, hi01 := p.get(), p.get()
	VPUNPCKLDQ(x[1], x[0], lo01)
	VPUNPCKHDQ(x[1], x[0], hi01)
	p.put(x[0], x[1])
	lo23, hi23 := p.get(), p.get()
	VPUNPCKLDQ(x[3], x[2], lo23)
	VPUNPCKHDQ(x[3], x[2], hi23)
	p.put(x[2], x[3])
	// Interleave 64-bit pairs: the low pairs of lo01 and lo23 are words
	// 0…3 of block 4L, their high pairs those of block 4L+1, and so on.
	var r [4]Register
	r[0], r[1] = p.get(), p.get()
	VPUNPCKLQDQ(lo23, lo01, r[0])
	VPUNPCKHQDQ(lo23, lo01, r[1])
	p.put(lo01, lo23)
	r[2], r[3] = p.get(), p.get()
	VPUNPCKLQDQ(hi23, hi01, r[2])
	VPUNPCKHQDQ(hi23, hi01, r[3])
	p.put(hi01, hi23)
	return r
}

// store writes chunks[b] (consecutive registers of size bytes each, starting
// at byte offset of block b) for b = 0, 1, … while blocks are left, and jumps
// to exit at the first block that is not wanted.
func store(mov func(src, dst Op), chunks [][]Register, offset, size int, exit string) {
	for b, cs := range chunks {
		if b > 0 {
			CMPQ(left, U8(b))
			JBE(LabelRef(exit))
		}
		for j, r := range cs {
			mov(r, outp.Offset(64*b+offset+size*j))
		}
	}
}

// avx512 emits the AVX-512 kernel: 16 blocks per iteration in ZMM registers,
// and a last step of 8 blocks in YMM or 4 in XMM when at most that many are
// left, so that short requests pay for no more than they get.
func avx512() {
	TEXT("keyStreamAVX512", NOSPLIT, signature)
	Pragma("noescape")
	Doc("keyStreamAVX512 is KeyStream's AVX-512 (F+VL) kernel; len(out) must be a multiple of 64.")
	Comment(
		"Registers: state word i of every block in Z0…Z15 (lane j = block j),",
		"the counter row Z16 (counter+j in lane j), Z17…Z31 free for the",
		"transposition. The 8- and 4-block steps use the YMM and XMM halves.",
	)
	Load(Param("out").Base(), RDI)
	Load(Param("out").Len(), left)
	SHRQ(U8(6), left)
	JZ(LabelRef("done"))
	Load(Param("key"), RSI)
	Load(Param("nonce"), RDX)
	Load(Param("counter"), EBX)
	VPBROADCASTD(EBX, Z16)
	VPADDD(lanes, Z16, Z16)

	Label("loop16")
	CMPQ(left, U8(8))
	JBE(LabelRef("tail8"))
	block512(16)
	ADDQ(U32(16*64), RDI)
	VPADDD_BCST(sixteen, Z16, Z16)
	SUBQ(U8(16), left)
	JA(LabelRef("loop16"))
	JMP(LabelRef("done"))

	Label("tail8")
	CMPQ(left, U8(4))
	JBE(LabelRef("tail4"))
	block512(8)
	JMP(LabelRef("done"))

	Label("tail4")
	block512(4)

	Label("done")
	Comment(
		"Leave no key or keystream in vector registers: zero Z16…Z31 here;",
		"VZEROALL zeroes Z0…Z15 and, like VZEROUPPER, spares the caller's SSE",
		"code the AVX transition penalty.",
	)
	for i := 16; i < 32; i++ {
		VPXORD(view(i, 16), view(i, 16), view(i, 16))
	}
	VZEROALL()
	RET()
}

// block512 computes w blocks (16, 8 or 4) and stores those that are wanted.
func block512(w int) {
	var x [16]Register
	for i := range x {
		x[i] = view(i, w)
	}
	ctr := view(16, w)
	Commentf("%d blocks: load the state, one word per register.", w)
	for i := 0; i < 4; i++ {
		VPBROADCASTD(sigma.Offset(4*i), x[i])
	}
	for i := 0; i < 8; i++ {
		VPBROADCASTD(keyp.Offset(4*i), x[4+i])
	}
	VMOVDQA32(ctr, x[12])
	for i := 0; i < 3; i++ {
		VPBROADCASTD(noncep.Offset(4*i), x[13+i])
	}

	MOVL(U32(10), rounds.As32())
	loop := fmt.Sprintf("rounds%d", w)
	Label(loop)
	quarterRounds512(x, columns)
	quarterRounds512(x, diagonals)
	DECL(rounds.As32())
	JNZ(LabelRef(loop))

	Comment("Add the input state.")
	for i := 0; i < 4; i++ {
		VPADDD_BCST(sigma.Offset(4*i), x[i], x[i])
	}
	for i := 0; i < 8; i++ {
		VPADDD_BCST(keyp.Offset(4*i), x[4+i], x[4+i])
	}
	VPADDD(ctr, x[12], x[12])
	for i := 0; i < 3; i++ {
		VPADDD_BCST(noncep.Offset(4*i), x[13+i], x[13+i])
	}

	transposeComment(w, "VSHUFI32X4")
	p := pool{}
	for i := 17; i < 32; i++ {
		p.put(view(i, w))
	}
	var r [4][4]Register // r[g][k] lane L: words 4g…4g+3 of block 4L+k
	for g := range r {
		r[g] = transpose4(x[4*g:4*g+4], &p)
	}
	chunks := make([][]Register, w)
	switch w {
	case 4: // block k is r[0][k] r[1][k] r[2][k] r[3][k]
		for k := range chunks {
			chunks[k] = []Register{r[0][k], r[1][k], r[2][k], r[3][k]}
		}
	case 8: // block 4L+k is lane L of r[0][k] r[1][k], then of r[2][k] r[3][k]
		for k := 0; k < 4; k++ {
			for h := 0; h < 2; h++ {
				lo, hi := p.get(), p.get()
				VSHUFI32X4(U8(0b00), r[2*h+1][k], r[2*h][k], lo)
				VSHUFI32X4(U8(0b11), r[2*h+1][k], r[2*h][k], hi)
				p.put(r[2*h][k], r[2*h+1][k])
				chunks[k] = append(chunks[k], lo)
				chunks[4+k] = append(chunks[4+k], hi)
			}
		}
	case 16: // block 4L+k is lane L of r[0][k] r[1][k] r[2][k] r[3][k]
		for k := 0; k < 4; k++ {
			// a = r0.0 r0.1 r1.0 r1.1, b = r0.2 r0.3 r1.2 r1.3,
			// c and d likewise from r2 and r3.
			a, b, c, d := p.get(), p.get(), p.get(), p.get()
			VSHUFI32X4(U8(0x44), r[1][k], r[0][k], a)
			VSHUFI32X4(U8(0xee), r[1][k], r[0][k], b)
			VSHUFI32X4(U8(0x44), r[3][k], r[2][k], c)
			VSHUFI32X4(U8(0xee), r[3][k], r[2][k], d)
			p.put(r[0][k], r[1][k], r[2][k], r[3][k])
			// Even lanes of a and c give lane 0 (block k) and lane 2
			// (block 8+k) when taken from b and d; odd lanes give 4+k, 12+k.
			for l, src := range [][2]Register{{a, c}, {a, c}, {b, d}, {b, d}} {
				o := p.get()
				VSHUFI32X4(U8([]uint8{0x88, 0xdd}[l%2]), src[1], src[0], o)
				chunks[4*l+k] = []Register{o}
			}
			p.put(a, b, c, d)
		}
	}
	Comment("Store the blocks that are wanted.")
	store(func(src, dst Op) { VMOVDQU32(src, dst) }, chunks, 0, 4*w, "done")
}

// transposeComment explains the transposition in the assembly itself; gather
// names the instruction that moves 128-bit lanes.
func transposeComment(w int, gather string) {
	Comment(
		"Transpose: VPUNPCK[LH]DQ, then VPUNPCK[LH]QDQ, leave words 4g…4g+3 of",
		"block 4L+k in 128-bit lane L of one register per (g, k).",
	)
	switch w {
	case 16:
		Comment(gather + " then gathers the four lanes of each block into one ZMM.")
	case 8:
		Comment(gather + " then gathers lanes in pairs into half blocks (YMM).")
	case 4:
		Comment("Lane 0 is then a quarter block (XMM), stored as it is.")
	}
}

func quarterRounds512(x [16]Register, qs [4][4]int) {
	for _, s := range qrSteps {
		for _, q := range qs {
			VPADDD(x[q[s.q]], x[q[s.p]], x[q[s.p]])
		}
		for _, q := range qs {
			VPXORD(x[q[s.p]], x[q[s.r]], x[q[s.r]])
		}
		for _, q := range qs {
			VPROLD(U8(s.rot), x[q[s.r]], x[q[s.r]])
		}
	}
}

// avx2 emits the AVX2 kernel: 8 blocks per iteration in YMM registers, and a
// last step of 4 blocks in XMM when at most 4 are left.
//
// AVX2 has 16 vector registers: the 16 state words and the temporaries the
// rotations need do not fit. Two of the c words (state words 8…11) live in
// stack scratch at a time: the column round does its first two quarter-rounds
// with words 8 and 9 in registers, swaps them for 10 and 11, and the diagonal
// round's first two quarter-rounds use 10 and 11 before swapping back.
func avx2() {
	TEXT("keyStreamAVX2", NOSPLIT, signature)
	Pragma("noescape")
	Doc("keyStreamAVX2 is KeyStream's AVX2 kernel; len(out) must be a multiple of 64.")
	Comment(
		"Registers: state words 0…7 in Y0…Y7, two of words 8…11 in Y8 and Y9,",
		"words 12…15 in Y10…Y13, rotation temporaries Y14 and Y15; lane j of",
		"each is block j. Scratch (32-byte aligned, base in BX): words 8…11 at",
		"0, 32, 64, 96 while spilled, the counter row (counter+j) at 128.",
	)
	frame := AllocLocal(6 * 32) // five aligned slots and room to align them
	LEAQ(frame, RBX)
	ADDQ(U8(31), RBX)
	ANDQ(I8(-32), RBX)

	Load(Param("out").Base(), RDI)
	Load(Param("out").Len(), left)
	SHRQ(U8(6), left)
	JZ(LabelRef("done"))
	Load(Param("key"), RSI)
	Load(Param("nonce"), RDX)
	Load(Param("counter"), EAX)
	VMOVD(EAX, X14)
	VPBROADCASTD(X14, Y14)
	VPADDD(lanes, Y14, Y14)
	VMOVDQU(Y14, counterSlot)

	Label("loop8")
	CMPQ(left, U8(4))
	JBE(LabelRef("tail4"))
	block2(8)
	ADDQ(U32(8*64), RDI)
	VPBROADCASTD(eight, Y14)
	VPADDD(counterSlot, Y14, Y14)
	VMOVDQU(Y14, counterSlot)
	SUBQ(U8(8), left)
	JA(LabelRef("loop8"))
	JMP(LabelRef("done"))

	Label("tail4")
	block2(4)

	Label("done")
	Comment(
		"Leave no key or keystream in the scratch or in vector registers",
		"(VZEROALL zeroes them all and, like VZEROUPPER, spares the caller's",
		"SSE code the AVX transition penalty).",
	)
	VPXOR(Y0, Y0, Y0)
	for i := 0; i < 5; i++ {
		VMOVDQU(Y0, scratch.Offset(32*i))
	}
	VZEROALL()
	RET()
}

var (
	scratch     = Mem{Base: RBX}
	counterSlot = scratch.Offset(128)
)

// spill returns the scratch slot of state word i (8…11).
func spill(i int) Mem { return scratch.Offset(32 * (i - 8)) }

// block2 computes w blocks (8 or 4) with AVX2 and stores those that are wanted.
func block2(w int) {
	v := func(i int) Register { return view(i, w) }
	var x [16]Register // nil while a word is spilled
	for i := 0; i < 10; i++ {
		x[i] = v(i)
	}
	for i := 12; i < 16; i++ {
		x[i] = v(i - 2)
	}
	t := [2]Register{v(14), v(15)}

	Commentf("%d blocks: load the state, one word per register or scratch slot.", w)
	for i := 0; i < 4; i++ {
		VPBROADCASTD(sigma.Offset(4*i), x[i])
	}
	for i := 0; i < 6; i++ {
		VPBROADCASTD(keyp.Offset(4*i), x[4+i])
	}
	for i := 10; i < 12; i++ {
		VPBROADCASTD(keyp.Offset(4*(i-4)), t[0])
		VMOVDQU(t[0], spill(i))
	}
	VMOVDQU(counterSlot, x[12])
	for i := 0; i < 3; i++ {
		VPBROADCASTD(noncep.Offset(4*i), x[13+i])
	}

	MOVL(U32(10), rounds.As32())
	loop := fmt.Sprintf("rounds%d", w)
	Label(loop)
	quarterRounds2(&x, columns[0:2], t)
	swap(&x, 8, 10)
	quarterRounds2(&x, columns[2:4], t)
	quarterRounds2(&x, diagonals[0:2], t)
	swap(&x, 10, 8)
	quarterRounds2(&x, diagonals[2:4], t)
	DECL(rounds.As32())
	JNZ(LabelRef(loop))

	// Words 0…7 make the first 32 bytes of every block, 8…15 the last 32.
	half2 := fmt.Sprintf("half%d", w)
	p := pool{t[0], t[1]}
	Comment("Add the input state to words 0…7, transpose and store them.")
	for i := 0; i < 8; i++ {
		in := keyp.Offset(4 * (i - 4))
		if i < 4 {
			in = sigma.Offset(4 * i)
		}
		tmp := p.get()
		VPBROADCASTD(in, tmp)
		VPADDD(tmp, x[i], x[i])
		p.put(tmp)
	}
	transposeComment(w, "VPERM2I128")
	r0, r1 := transpose4(x[0:4], &p), transpose4(x[4:8], &p)
	store(VMOVDQU, halves(w, r0, r1, &p), 0, 4*w, half2)

	Label(half2)
	p = pool{}
	for i := 0; i < 10; i++ {
		if i != 8 && i != 9 {
			p.put(v(i))
		}
	}
	p.put(t[0], t[1])
	Comment("Reload words 10 and 11, add the input state to words 8…15, transpose and store them.")
	for i := 10; i < 12; i++ {
		x[i] = p.get()
		VMOVDQU(spill(i), x[i])
	}
	for i := 8; i < 12; i++ {
		tmp := p.get()
		VPBROADCASTD(keyp.Offset(4*(i-4)), tmp)
		VPADDD(tmp, x[i], x[i])
		p.put(tmp)
	}
	VPADDD(counterSlot, x[12], x[12])
	for i := 0; i < 3; i++ {
		tmp := p.get()
		VPBROADCASTD(noncep.Offset(4*i), tmp)
		VPADDD(tmp, x[13+i], x[13+i])
		p.put(tmp)
	}
	r2, r3 := transpose4(x[8:12], &p), transpose4(x[12:16], &p)
	store(VMOVDQU, halves(w, r2, r3, &p), 32, 4*w, "done")
}

// halves arranges the transposed registers of 8 words (rlo: words 4g…4g+3,
// rhi: the next four) into 32-byte half blocks, per block.
func halves(w int, rlo, rhi [4]Register, p *pool) [][]Register {
	chunks := make([][]Register, w)
	if w == 4 { // XMM: lane 0 is the whole quarter block
		for k := range chunks {
			chunks[k] = []Register{rlo[k], rhi[k]}
		}
		return chunks
	}
	// YMM: block k takes lane 0 of rlo[k] and rhi[k], block 4+k lane 1.
	for k := 0; k < 4; k++ {
		lo, hi := p.get(), p.get()
		VPERM2I128(U8(0x20), rhi[k], rlo[k], lo)
		VPERM2I128(U8(0x31), rhi[k], rlo[k], hi)
		p.put(rlo[k], rhi[k])
		chunks[k] = []Register{lo}
		chunks[4+k] = []Register{hi}
	}
	return chunks
}

// swap spills words out, out+1 to scratch and loads words in, in+1 into
// their registers.
func swap(x *[16]Register, out, in int) {
	for j := 0; j < 2; j++ {
		VMOVDQU(x[out+j], spill(out+j))
		VMOVDQU(spill(in+j), x[out+j])
		x[in+j], x[out+j] = x[out+j], nil
	}
}

// quarterRounds2 emits two quarter-rounds in lockstep, each with its own
// temporary for the rotations that VPSHUFB cannot do.
func quarterRounds2(x *[16]Register, qs [][4]int, t [2]Register) {
	for _, s := range qrSteps {
		for _, q := range qs {
			VPADDD(x[q[s.q]], x[q[s.p]], x[q[s.p]])
		}
		for _, q := range qs {
			VPXOR(x[q[s.p]], x[q[s.r]], x[q[s.r]])
		}
		for i, q := range qs {
			d := x[q[s.r]]
			switch s.rot {
			case 16:
				VPSHUFB(rot16, d, d)
			case 8:
				VPSHUFB(rot8, d, d)
			default:
				VPSLLD(U8(s.rot), d, t[i])
				VPSRLD(U8(32-s.rot), d, d)
				VPOR(t[i], d, d)
			}
		}
	}
}
