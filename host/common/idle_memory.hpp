#pragma once

namespace upparat {

/// Gives the kernel back the memory a finished piece of work left behind on this thread, so
/// that an idle daemon does not keep a job's peak:
/// - the free pages of malloc's heap (`malloc_trim`: malloc keeps freed memory otherwise);
/// - the pages of this thread's stack below the caller's frame, which a deep call (a TLS
///   handshake, a hook's output, a download) touched and which stay resident while the
///   thread lives. They read as zeros when touched again.
/// Call it between tasks, from a shallow frame: nothing below the caller may be in use.
/// Takes well under a millisecond.
void give_back_idle_memory();

}  // namespace upparat
