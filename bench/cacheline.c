// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The cache-line round trip between two CPUs, in nanoseconds: one thread pinned to each, bouncing a counter in one
 * cache line (one stores, the other spins until it sees the store and answers with the next value).
 *
 * scripts/bench.sh records it beside each workload: on a VM whose host moves the vCPUs between one die and two,
 * every one-connection figure follows it (docs/benchmarks.md, "The machine's two speeds"), so the reading says
 * which placement a run had.
 *
 *   cc -O2 -pthread bench/cacheline.c -o cacheline && ./cacheline 0 1 [ROUND_TRIPS]   # prints e.g. 55
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic unsigned long line __attribute__((aligned(64)));
static unsigned long trips;

/* The answering side (started on its CPU): waits for each odd value and stores the even one after it. */
static void *answer(void *arg)
{
	(void)arg;
	for (unsigned long i = 0; i < trips; i++) {
		while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1)
			;
		atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
	}
	return NULL;
}

static int cpu_arg(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return (*s && !*end && v >= 0 && v < CPU_SETSIZE) ? (int)v : -1;
}

int main(int argc, char **argv)
{
	int a = argc > 2 ? cpu_arg(argv[1]) : -1, b = argc > 2 ? cpu_arg(argv[2]) : -1;
	struct timespec start, end;
	pthread_attr_t attr;
	pthread_t other;
	cpu_set_t set;

	trips = argc > 3 ? strtoul(argv[3], NULL, 10) : 200000;
	if (a < 0 || b < 0 || trips == 0 || argc > 4) {
		fprintf(stderr, "usage: %s CPU_A CPU_B [ROUND_TRIPS] (CPUs as numbered in /proc/cpuinfo)\n", argv[0]);
		return 2;
	}
	CPU_ZERO(&set);
	CPU_SET(a, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
		fprintf(stderr, "cacheline: cannot run on CPU %d\n", a);
		return 1;
	}
	/* The other thread starts on its CPU or not at all, so the loop below never waits for an answer that cannot
	 * come. */
	CPU_ZERO(&set);
	CPU_SET(b, &set);
	if (pthread_attr_init(&attr) != 0 || pthread_attr_setaffinity_np(&attr, sizeof(set), &set) != 0 ||
	    pthread_create(&other, &attr, answer, NULL) != 0) {
		fprintf(stderr, "cacheline: cannot start a thread on CPU %d\n", b);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned long i = 0; i < trips; i++) {
		atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
		while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2)
			;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	pthread_join(other, NULL);
	printf("%.0f\n", ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / (double)trips);
	return 0;
}
