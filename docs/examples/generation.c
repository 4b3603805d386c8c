/*
 * generation.c: read a snapsafe generation page from C, following
 * docs/ABI.md and nothing else.
 *
 *   cc -O2 -o generation docs/examples/generation.c
 *   ./generation --socket /run/snapsafe/control.sock   (preferred)
 *   ./generation /run/snapsafe/generation
 *
 * With --socket it asks the provider for its page (request 0x09), a sealed
 * memfd that nobody can truncate or write: the mapping can never fault.
 * Given the page file, it maps the file, which root or the provider's user
 * can truncate under the mapping (the next access then raises SIGBUS).
 *
 * Prints the generation (the hot-path load) and a consistent snapshot of
 * the other fields (the seqlock read).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1 */
#endif

#define PAGE_SIZE_ABI 4096
#define MAGIC 0x46534e53u /* "SNSF" */
#define VERSION 1

#define OFF_MAGIC 0x000
#define OFF_VERSION 0x004
#define OFF_SIZE 0x008
#define OFF_GENERATION 0x040
#define OFF_SEQ 0x080
#define OFF_WIPED 0x088
#define OFF_EPOCH 0x090
#define OFF_REALTIME 0x0a0
#define OFF_MONOTIME 0x0a8
#define OFF_REASON 0x0b0
#define OFF_STATE 0x0b4
#define OFF_PID 0x0b8
#define OFF_BACKEND 0x0bc

static const char *reasons[] = {"none", "startup", "acpi", "vmclock", "forced"};
static const char *states[] = {"none", "running", "stopped"};
static const char *backends[] = {"none", "manual", "acpi", "vmclock"};

#define U64(p, off) ((const uint64_t *)((p) + (off)))
#define U32(p, off) ((const uint32_t *)((p) + (off)))

/* The hot path: one atomic load. */
static inline uint64_t generation(const unsigned char *p) {
	return __atomic_load_n(U64(p, OFF_GENERATION), __ATOMIC_ACQUIRE);
}

struct snapshot {
	uint64_t generation, wiped, realtime_ns, monotonic_ns;
	unsigned char epoch[16];
	uint32_t reason, state, pid, backend;
};

/* The seqlock read of section 2.2; 0 on success, -1 if the page stayed in
 * a write section for about 500 ms (the provider died mid-bump). */
static int read_snapshot(const unsigned char *p, struct snapshot *s) {
	for (int tries = 0; tries < 100 + 1000; tries++) {
		uint64_t s1 = __atomic_load_n(U64(p, OFF_SEQ), __ATOMIC_ACQUIRE);
		if ((s1 & 1) == 0) {
			uint64_t e0, e1;
			s->generation = __atomic_load_n(U64(p, OFF_GENERATION), __ATOMIC_RELAXED);
			s->wiped = __atomic_load_n(U64(p, OFF_WIPED), __ATOMIC_RELAXED);
			e0 = __atomic_load_n(U64(p, OFF_EPOCH), __ATOMIC_RELAXED);
			e1 = __atomic_load_n(U64(p, OFF_EPOCH + 8), __ATOMIC_RELAXED);
			s->realtime_ns = __atomic_load_n(U64(p, OFF_REALTIME), __ATOMIC_RELAXED);
			s->monotonic_ns = __atomic_load_n(U64(p, OFF_MONOTIME), __ATOMIC_RELAXED);
			s->reason = __atomic_load_n(U32(p, OFF_REASON), __ATOMIC_RELAXED);
			s->state = __atomic_load_n(U32(p, OFF_STATE), __ATOMIC_RELAXED);
			s->pid = __atomic_load_n(U32(p, OFF_PID), __ATOMIC_RELAXED);
			s->backend = __atomic_load_n(U32(p, OFF_BACKEND), __ATOMIC_RELAXED);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (__atomic_load_n(U64(p, OFF_SEQ), __ATOMIC_RELAXED) == s1) {
				memcpy(s->epoch, &e0, 8); /* little-endian: memory order */
				memcpy(s->epoch + 8, &e1, 8);
				return 0;
			}
		}
		if (tries >= 100) {
			struct timespec ts = {0, 500000}; /* sleep, do not spin: 0.5 ms */
			nanosleep(&ts, NULL);
		}
	}
	return -1;
}

static const char *name(const char **names, size_t n, uint32_t v) {
	return v < n ? names[v] : "unknown";
}

/* Asks the provider listening on sock for its page (section 3, request
 * 0x09) and returns the sealed memfd, or -1. A real client keeps the
 * connection open: when it closes, the provider is gone and the page no
 * longer changes. */
static int page_memfd(const char *sock) {
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof sa.sun_path) {
		fprintf(stderr, "%s: path too long\n", sock);
		return -1;
	}
	strcpy(sa.sun_path, sock);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
		fprintf(stderr, "connecting to %s: %s\n", sock, strerror(errno));
		return -1;
	}
	/* Header: version 1, type 0x09, reserved 0, request id 1 (LE). */
	const unsigned char req[8] = {1, 0x09, 0, 0, 1, 0, 0, 0};
	if (send(s, req, sizeof req, 0) != sizeof req) {
		fprintf(stderr, "sending the page request: %s\n", strerror(errno));
		close(s);
		return -1;
	}
	unsigned char rep[4096];
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {rep, sizeof rep};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	close(s);
	int fd = -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (n >= 0 && c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(c), sizeof fd);
	if (n >= 12 && rep[1] == 0xff) { /* error: u32 code, then text */
		fprintf(stderr, "the provider refused: %.*s\n", (int)(n - 12), (const char *)rep + 12);
	} else if (n != 12 || rep[0] != 1 || rep[1] != 0x89 || rep[4] != 1 || fd < 0 ||
		   (rep[8] | rep[9] << 8 | rep[10] << 16 | (uint32_t)rep[11] << 24) != PAGE_SIZE_ABI) {
		fprintf(stderr, "unexpected reply to the page request\n");
	} else {
		/* The seals that make the mapping safe: fixed size, no writer but the provider. */
		int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE;
		int seals = fcntl(fd, F_GET_SEALS);
		if (seals >= 0 && (seals & need) == need)
			return fd;
		fprintf(stderr, "the page memfd is not sealed (seals %#x)\n", seals);
	}
	if (fd >= 0)
		close(fd);
	return -1;
}

int main(int argc, char **argv) {
	int fd;
	const char *what;
	if (argc == 3 && strcmp(argv[1], "--socket") == 0) {
		what = "the provider's page";
		fd = page_memfd(argv[2]);
		if (fd < 0)
			return 1;
	} else if (argc == 2) {
		what = argv[1];
		fd = open(argv[1], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "opening %s: %s\n", argv[1], strerror(errno));
			return 1;
		}
	} else {
		fprintf(stderr, "usage: %s --socket /run/snapsafe/control.sock | /run/snapsafe/generation\n", argv[0]);
		return 2;
	}
	const unsigned char *p = mmap(NULL, PAGE_SIZE_ABI, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "mapping %s: %s\n", what, strerror(errno));
		return 1;
	}
	if (*U32(p, OFF_MAGIC) != MAGIC || *(const uint16_t *)(p + OFF_VERSION) != VERSION ||
	    *U32(p, OFF_SIZE) != PAGE_SIZE_ABI) {
		fprintf(stderr, "%s is not a version %d snapsafe generation page\n", what, VERSION);
		return 1;
	}
	printf("generation %" PRIu64 "\n", generation(p));
	struct snapshot s;
	if (read_snapshot(p, &s) != 0) {
		fprintf(stderr, "the page stayed in a write section: is the provider alive?\n");
		return 1;
	}
	printf("wiped %" PRIu64 "\nepoch ", s.wiped);
	for (int i = 0; i < 16; i++)
		printf("%02x%s", s.epoch[i], (i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
	printf("\nrealtime_ns %" PRIu64 "\nmonotonic_ns %" PRIu64 "\n", s.realtime_ns, s.monotonic_ns);
	printf("reason %s\nstate %s\npid %" PRIu32 "\nbackend %s\n",
	       name(reasons, 5, s.reason), name(states, 3, s.state), s.pid, name(backends, 4, s.backend));
	return 0;
}
