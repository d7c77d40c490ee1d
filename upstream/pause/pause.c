/*
 * kubedrill's pod infrastructure ("pause") program, written for kubedrill.
 *
 * A pod's sandbox container only has to exist: it holds the pod's namespaces open.
 * So this program
 *   - sleeps forever in pause(2), using no CPU;
 *   - exits 0 when asked to stop (SIGINT or SIGTERM), so the runtime sees a clean stop;
 *   - reaps every child that reaches it (SIGCHLD), because with a shared PID namespace it is
 *     PID 1 of the pod and orphans are re-parented to it;
 *   - prints its version with -v and exits.
 * Built static (gcc -static -Os) so the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "unknown"
#endif

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		printf("kubedrill pause %s\n", VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: note: not running as PID 1\n");
	if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
	    handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
}
