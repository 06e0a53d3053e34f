package fleetgen

// rng is a splitmix64 stream. Each event gets a stream of its own, seeded
// from the generator's seed and the event's number, so that event i is the
// same whoever makes it, in whatever order: concurrent writers draw
// without sharing a generator.
type rng struct{ s uint64 }

const gamma = 0x9e3779b97f4a7c15

// mix64 is splitmix64's finalizer: a bijection that scatters nearby inputs.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// streamFor returns event i's stream. The state is hashed from i, not
// i*gamma: streams of consecutive events must not be shifted copies of
// one another.
func streamFor(base uint64, i int64) rng { return rng{s: mix64(base + uint64(i))} }

func (r *rng) next() uint64 {
	r.s += gamma
	return mix64(r.s)
}

// intn returns a number in [0, n). The modulo bias is below 2^-40 for the
// n used here.
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// chance reports true with probability p.
func (r *rng) chance(p float64) bool { return r.float() < p }
