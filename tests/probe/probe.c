/*
 * probe: tries one forbidden thing from inside a pinfold container and says
 * what happened (the pattern of bubblewrap's tests/try-syscall.c).
 *
 *   probe NAME [ARGS...]
 *
 * Prints one line "NAME: refused (errno NAME)" or "NAME: ALLOWED" and exits
 * 0 when refused, 1 when allowed, 2 when the probe itself could not run.
 * Built statically by the tests (cc -static) and copied into the test rootfs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char *name;

/* Where `probe outside` listens (see main). */
#define OUTSIDE_PORT 47999
#define OUTSIDE_NAME "pinfold-probe-outside"

static int result(long rc) {
    if (rc < 0) {
        printf("%s: refused (errno %s)\n", name, strerrorname_np(errno));
        return 0;
    }
    printf("%s: ALLOWED\n", name);
    return 1;
}

/* Returns the raw result of a clone() with the given flags; the child exits at once. */
static long try_clone(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return pid;
}

static int tcp_connect(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return connect(s, (struct sockaddr *)&a, sizeof a);
}

/* Memory the kernel holds for a job without it being private resident memory:
 * each trick touches MB MiB one way, holds it for 20 s, and exits 0 (the
 * supervisor must kill it first), or exits 3 printing "refused" when the
 * kernel refuses it. */
static void touch(char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096) /* volatile: the stores must happen */
        ((volatile char *)p)[i] = 1;
}

/* A SysV segment of SIZE bytes, attached (at *AT) and touched: 0; 3 when
 * shmget refuses it, said on stdout as "refused: shmget <WHERE><MB> MiB:
 * <error>"; 1 when it cannot be attached. */
static int sysv_touch(size_t size, const char *where, size_t mb, char **at) {
    int id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    if (id < 0) {
        printf("refused: shmget %s%zu MiB: %s\n", where, mb, strerror(errno));
        return 3;
    }
    *at = shmat(id, NULL, 0);
    if (*at == (void *)-1)
        return 1;
    touch(*at, size);
    return 0;
}

static int mem_trick(const char *trick, size_t mb) {
    size_t n = mb << 20;
    if (!strcmp(trick, "shared-anon") || !strcmp(trick, "shared-anon-dontneed")) {
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        touch(p, n);
        /* Out of the page tables (RSS 0), still in the shmem object. */
        if (!strcmp(trick, "shared-anon-dontneed") && madvise(p, n, MADV_DONTNEED))
            return 1;
    } else if (!strcmp(trick, "shared-anon-forked")) {
        /* One mapping shared by 4 processes: the memory exists once. */
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        touch(p, n);
        for (int i = 0; i < 3; i++)
            if (fork() == 0) {
                touch(p, n);
                sleep(3);
                _exit(0);
            }
        sleep(3);
        while (wait(NULL) > 0)
            ;
        return 0;
    } else if (!strcmp(trick, "memfd-mapped")) {
        /* Mapped, touched, then the fd closed: only the mapping holds it. */
        int fd = memfd_create("trick", 0);
        if (fd < 0 || ftruncate(fd, n))
            return 1;
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            return 1;
        close(fd);
        touch(p, n);
    } else if (!strcmp(trick, "memfd-write")) {
        /* Never mapped: written with write(2), held by the fd. */
        int fd = memfd_create("trick", 0);
        static char buf[1 << 20];
        memset(buf, 1, sizeof buf);
        if (fd < 0)
            return 1;
        for (size_t i = 0; i < mb; i++)
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
                return 1;
    } else if (!strcmp(trick, "sysv")) {
        /* One segment, attached and touched. */
        char *p;
        int rc = sysv_touch(n, "", mb, &p);
        if (rc)
            return rc;
    } else if (!strcmp(trick, "sysv-detached")) {
        /* 8 MiB segments, each touched then detached (but not removed). */
        for (size_t done = 0; done < mb; done += 8) {
            char *p;
            int rc = sysv_touch(8 << 20, "after ", done, &p);
            if (rc)
                return rc;
            shmdt(p);
        }
    } else if (!strcmp(trick, "mlock-file")) {
        /* Pins MB of a file's page cache (/bin/busybox, repeated mappings). */
        int fd = open("/bin/busybox", O_RDONLY);
        if (fd < 0)
            return 1;
        off_t len = lseek(fd, 0, SEEK_END);
        for (size_t done = 0; done < n; done += len) {
            char *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED)
                return 1;
            if (mlock(p, len)) {
                printf("refused: mlock after %zu MiB: %s\n", done >> 20, strerror(errno));
                return 3;
            }
        }
    } else {
        fprintf(stderr, "probe: unknown memory trick %s\n", trick);
        return 2;
    }
    printf("held %zu MiB\n", mb);
    fflush(stdout);
    sleep(20);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe NAME [ARGS...]\n");
        return 2;
    }
    name = argv[1];
    if (!strcmp(name, "now")) { /* the monotonic clock in ns, first thing: a step's start (bench/steps.sh) */
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
        return 0;
    }
    const char *arg = argc > 2 ? argv[2] : NULL;

    if (!strcmp(name, "mount"))
        return result(mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(name, "umount"))
        return result(umount2("/proc", MNT_DETACH));
    if (!strcmp(name, "pivot_root"))
        return result(syscall(SYS_pivot_root, "/tmp", "/tmp"));
    if (!strcmp(name, "chroot"))
        return result(chroot("/tmp"));
    if (!strcmp(name, "unshare-user"))
        return result(unshare(CLONE_NEWUSER));
    if (!strcmp(name, "unshare-mount"))
        return result(unshare(CLONE_NEWNS));
    if (!strcmp(name, "clone-newuser"))
        return result(try_clone(CLONE_NEWUSER));
    if (!strcmp(name, "clone3")) {
        struct clone_args ca = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
        long pid = syscall(SYS_clone3, &ca, sizeof ca);
        if (pid == 0)
            _exit(0);
        return result(pid);
    }
    if (!strcmp(name, "setns")) {
        int fd = open("/proc/self/ns/user", O_RDONLY);
        return result(fd < 0 ? fd : setns(fd, 0));
    }
    if (!strcmp(name, "keyctl"))
        return result(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    if (!strcmp(name, "add_key"))
        return result(syscall(SYS_add_key, "user", "pinfold", "x", 1, -3));
    if (!strcmp(name, "bpf")) {
        char attr[128] = {0};
        return result(syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    }
    if (!strcmp(name, "perf_event_open")) {
        char attr[128] = {0};
        ((uint32_t *)attr)[1] = sizeof attr; /* size */
        return result(syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
    }
    if (!strcmp(name, "io_uring_setup")) {
        char params[120] = {0};
        return result(syscall(SYS_io_uring_setup, 8, params));
    }
    if (!strcmp(name, "userfaultfd"))
        return result(syscall(SYS_userfaultfd, 0));
    if (!strcmp(name, "open_by_handle_at")) {
        char handle[136] = {0};
        ((uint32_t *)handle)[0] = 8;
        return result(syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY));
    }
    if (!strcmp(name, "kexec_load"))
        return result(syscall(SYS_kexec_load, 0, 0, NULL, 0));
    if (!strcmp(name, "init_module"))
        return result(syscall(SYS_init_module, NULL, 0, ""));
    if (!strcmp(name, "tiocsti")) {
        /* TIOCSTI with high bits set: must still be matched (low 32 bits). */
        char c = 'x';
        return result(syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), &c));
    }
    if (!strcmp(name, "tiocsti-plain")) {
        char c = 'x';
        return result(ioctl(0, TIOCSTI, &c));
    }
    if (!strcmp(name, "socket") || !strcmp(name, "socketpair")) {
        /* probe socket FAMILY [TYPE]: TYPE 11 is past SOCK_MAX, so the kernel
         * itself answers EINVAL for any family it reaches; EAFNOSUPPORT then
         * means seccomp answered before the kernel looked. */
        int family = atoi(arg), type = argc > 3 ? atoi(argv[3]) : SOCK_STREAM;
        int sv[2];
        if (!strcmp(name, "socket"))
            return result(socket(family, type, 0));
        return result(socketpair(family, type, 0, sv));
    }
    if (!strcmp(name, "shm-leave")) /* makes a SysV segment and exits without removing it */
        return shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600) < 0 ? 2 : 0;
    if (!strcmp(name, "mq-leave")) { /* makes a POSIX message queue and exits without removing it */
        mqd_t q = mq_open("/pinfold-left", O_CREAT | O_RDWR, 0600, NULL);
        if (q == (mqd_t)-1) {
            perror("mq_open");
            return 2;
        }
        return 0;
    }
    if (!strcmp(name, "mq-check")) { /* says whether an earlier step's queue is still there */
        mqd_t q = mq_open("/pinfold-left", O_RDONLY);
        puts(q == (mqd_t)-1 ? "mq-gone" : "mq-left");
        return 0;
    }
    if (!strcmp(name, "sched-init")) { /* gives PID 1 a custom time slice (sched_setattr): a later step must not inherit it */
        struct { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t prio; uint64_t runtime, deadline, period; } a = {0};
        a.size = sizeof a;
        a.runtime = 100000;
        return result(syscall(SYS_sched_setattr, 1, &a, 0));
    }
    if (!strcmp(name, "prlimit-init")) { /* lowers PID 1's RLIMIT_NOFILE: a later step must not inherit it */
        struct rlimit r = {64, 64};
        return result(prlimit(1, RLIMIT_NOFILE, &r, NULL));
    }
    if (!strcmp(name, "ptrace-init"))
        return result(ptrace(PTRACE_ATTACH, 1, 0, 0));
    if (!strcmp(name, "write-file")) { /* probe write-file PATH */
        int fd = open(arg, O_WRONLY | O_APPEND);
        if (fd >= 0 && write(fd, "", 0) < 0)
            fd = -1;
        return result(fd);
    }
    if (!strcmp(name, "create-file")) { /* probe create-file PATH */
        return result(open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    }
    if (!strcmp(name, "connect")) /* probe connect IP PORT */
        return result(tcp_connect(arg, atoi(argv[3])));
    if (!strcmp(name, "http-get")) { /* probe http-get IP PORT PATH: prints the response */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, arg, &a.sin_addr);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
            return result(-1);
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[4], arg);
        if (write(s, req, n) != n)
            return result(-1);
        char buf[4096];
        ssize_t r;
        while ((r = read(s, buf, sizeof buf)) > 0)
            fwrite(buf, 1, r, stdout);
        printf("\n");
        return result(0);
    }
    if (!strcmp(name, "tcp-loopback")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
            getsockname(l, (struct sockaddr *)&a, &len) < 0)
            return result(-1);
        return result(tcp_connect("127.0.0.1", ntohs(a.sin_port)));
    }
    if (!strcmp(name, "abstract-unix")) { /* probe abstract-unix NAME */
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path + 1, arg, sizeof a.sun_path - 2);
        return result(connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + strlen(arg)));
    }
    if (!strcmp(name, "kill")) /* probe kill PID */
        return result(kill(atoi(arg), 0));
    /* What a kernel below Landlock ABI 6 / 4 / 3 leaves to pinfold's
     * compensating controls (sandbox/src/kernel.rs). `outside PIDFILE` runs
     * on the host, as the container's user: a TCP listener on
     * 127.0.0.1:OUTSIDE_PORT, an abstract unix socket @OUTSIDE_NAME and its
     * pid in PIDFILE, for 10 minutes; the *-outside probes, from inside,
     * must not reach any of them. */
    if (!strcmp(name, "outside")) {
        int t = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(OUTSIDE_PORT),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int u = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un ua = {.sun_family = AF_UNIX};
        strcpy(ua.sun_path + 1, OUTSIDE_NAME);
        if (t < 0 || bind(t, (struct sockaddr *)&a, sizeof a) < 0 || listen(t, 64) < 0 || u < 0 ||
            bind(u, (struct sockaddr *)&ua, offsetof(struct sockaddr_un, sun_path) + 1 + strlen(OUTSIDE_NAME)) < 0 ||
            listen(u, 64) < 0) {
            perror("outside: listen");
            return 2;
        }
        FILE *f = fopen(arg, "w");
        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f)) {
            perror("outside: pid file");
            return 2;
        }
        sleep(600);
        return 0;
    }
    if (!strcmp(name, "tcp-outside")) /* TCP rules (ABI 4) or the network namespace */
        return result(tcp_connect("127.0.0.1", OUTSIDE_PORT));
    if (!strcmp(name, "abstract-outside")) { /* scopes (ABI 6) or the network namespace */
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strcpy(a.sun_path + 1, OUTSIDE_NAME);
        return result(s < 0 ? -1 : connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + strlen(OUTSIDE_NAME)));
    }
    if (!strcmp(name, "kill-outside")) { /* scopes (ABI 6) or the pid namespace: probe kill-outside [PIDFILE] */
        FILE *f = fopen(arg ? arg : "/outside.pid", "r");
        int pid = 0;
        if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 1) {
            fprintf(stderr, "probe: kill-outside: no pid in %s\n", arg ? arg : "/outside.pid");
            return 2;
        }
        return result(kill(pid, SIGTERM));
    }
    if (!strcmp(name, "truncate-ro")) /* truncate (ABI 3) or a read-only mount: probe truncate-ro [PATH] */
        return result(truncate(arg ? arg : "/proc/self/comm", 0));
    if (!strcmp(name, "fds")) {
        /* Lists open fds other than 0-2 and the one reading the directory. */
        DIR *d = opendir("/proc/self/fd");
        if (!d) {
            perror("opendir");
            return 2;
        }
        int mine = dirfd(d), extra = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            int fd = atoi(e->d_name);
            if (fd > 2 && fd != mine) {
                char path[64], target[256] = {0};
                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                readlink(path, target, sizeof target - 1);
                printf("fds: extra fd %d -> %s\n", fd, target);
                extra++;
            }
        }
        if (!extra)
            printf("fds: only 0-2\n");
        return extra ? 1 : 0;
    }
    if (!strcmp(name, "nodump-alloc")) { /* probe nodump-alloc MB: not dumpable, then MB resident for 20 s */
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        size_t n = (size_t)(argc > 2 ? atoi(argv[2]) : 256) << 20;
        char *p = malloc(n);
        if (!p)
            return 1;
        for (size_t i = 0; i < n; i += 4096) /* volatile: the stores must happen */
            ((volatile char *)p)[i] = 1;
        sleep(20);
        return 0;
    }
    if (!strcmp(name, "mem") && argc > 3) /* probe mem TRICK MB (see mem_trick) */
        return mem_trick(argv[2], (size_t)atoi(argv[3]));
    if (!strcmp(name, "forkbomb")) { /* probe forkbomb SECS: a bomb that retries refused forks, for SECS */
        time_t end = time(NULL) + (argc > 2 ? atoi(argv[2]) : 10);
        while (time(NULL) < end)
            if (fork() < 0)
                usleep(1000);
        return 0;
    }
    fprintf(stderr, "probe: unknown probe %s\n", name);
    return 2;
}
