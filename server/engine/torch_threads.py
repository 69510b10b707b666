"""Which threads run torch's multi-threaded kernels: each model's own worker thread, and only those.

On a CPU torch parallelises an operator with OpenMP, and GNU OpenMP gives every thread that starts
a parallel region a team of worker threads of its own, kept for the thread's life. Once more of
those threads exist than there are cores (the thread that loaded a model, request-preparation
threads that ran a tensor operation), libgomp stops spinning between regions and puts its workers
to sleep after each one; waking them costs every operator of a forward pass. Measured (2 cores):
a small SenseVoice pass on a 10 s clip took 57-61 ms when its thread had also loaded the model,
69-75 ms when another thread had; embeddings of short texts served 4-14% faster once the model
loaded on its worker thread. So:

* a model loads, warms up and computes on one thread, its batcher's (``server.runtime``);
* torch work on any other thread (audio features, voice activity) runs single-threaded
  (``one_torch_thread``): it is small, and a team of its own would cost more than it gives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded in this thread, for the duration.

    torch.set_num_threads also sets the default that threads which have not used torch yet will
    take (OpenMP keeps the count per thread): a short-lived thread puts that default straight back
    (only a thread first using torch in those ~0.1 ms would still pick up the 1)."""
    threads = torch.get_num_threads()  # also runs torch's per-thread init, which would undo the 1 later
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(threads,), name="torch-threads")
    restore.start()
    restore.join()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
