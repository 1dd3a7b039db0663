"""The ctypes prelude that the signal-stack crash scripts share (they run in their own processes)."""

# Pasted into each child script: the sigaltstack struct and libc with mmap/mprotect typed, so a script can
# leave an alternate signal stack behind that the kernel cannot write, as OpenVINO's CPU plugin did.
ALTSTACK_PRELUDE = r"""
class StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
"""
