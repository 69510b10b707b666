"""What the adapters share for running a network: the device and dtype, packed bfloat16 on a CPU, the finite-output check, and the XLM-R text-model helpers and tiny builder."""
