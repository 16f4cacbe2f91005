// What Glibc's Swift module does not import: epoll, eventfd, and a few
// helpers whose C definitions are macros or variadic.
#ifndef SWITCHYARD_CSYSTEM_H
#define SWITCHYARD_CSYSTEM_H

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <time.h>
#include <spawn.h>
#include <sched.h>

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, served by the vDSO).
static inline uint64_t csystem_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/// A cheaper monotonic clock that moves in ticks of a few milliseconds
/// (CLOCK_MONOTONIC_COARSE): for timeouts, not for latencies.
static inline uint64_t csystem_coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/// fcntl(fd, F_SETFL, flags | O_NONBLOCK); fcntl is variadic and not callable from Swift.
int csystem_set_nonblocking(int fd);

/// accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); accept4 needs _GNU_SOURCE.
int csystem_accept_nonblocking(int fd);

/// The calling thread's id (gettid, which needs _GNU_SOURCE): its /proc/self/task entry.
int csystem_thread_id(void);

/// copy_file_range(in, NULL, out, NULL, len, 0): the kernel copies between two files' current
/// offsets (it needs _GNU_SOURCE). -1 with errno when it cannot (another filesystem, say).
long csystem_copy_file_range(int in, int out, unsigned long len);

/// sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE): starts writing those bytes back
/// without waiting (so a later fsync has less left to wait for); needs _GNU_SOURCE.
int csystem_start_writeback(int fd, long long offset, long long length);

/// The terminal's width in columns, or 0 when fd is not a terminal.
int csystem_terminal_columns(int fd);

/// Single-writer counters: the owning thread adds with a relaxed load and store
/// (no locked instruction); any thread reads with a relaxed load.
static inline void csystem_counter_add(uint64_t *counter, uint64_t value) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + value, __ATOMIC_RELAXED);
}

static inline uint64_t csystem_counter_load(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/// posix_spawn_file_actions_addclosefrom_np (a GNU extension): the child closes fds >= `fd`.
int csystem_spawn_add_closefrom(posix_spawn_file_actions_t *actions, int fd);

/// Makes the C library keep freed memory (blocks up to 32 MiB come from the heap, and up to
/// 128 MiB free at its top stay mapped) for a process that frees and allocates the same large
/// buffers over and over: the next allocation reuses pages instead of faulting in zeroed ones.
void csystem_keep_freed_memory(void);

/// Whether this CPU has the SHA extensions `csystem_sha256_blocks` needs.
int csystem_sha256_accelerated(void);

/// SHA-256 compression of `blocks` 64-byte blocks into `state`, with the x86
/// SHA extensions; call only when `csystem_sha256_accelerated()` is true.
void csystem_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);

/// Catches `sig` with a handler that writes its number to a pipe (async-signal-safe), and returns
/// the pipe's read end (the same for every signal), or -1. Once it returns, the signal is never
/// lost or fatal: whoever reads the pipe decides what it means.
int csystem_catch_signal(int sig);

/// Moves the calling thread to Linux's SCHED_IDLE class: it runs on CPU nobody else wants (work
/// that must not slow the event loops). Returns 0, or -1 where the kernel refuses.
static inline int csystem_idle_priority(void) {
    struct sched_param param = {0};
    return sched_setscheduler(0, 5 /* SCHED_IDLE */, &param);
}

#endif
