import type { NextConfig } from 'next';
import { withDurably } from 'durably/next';

const nextConfig: NextConfig = {
  // This example lives inside the durably repository, beside other lockfiles: pin the app's
  // root to this folder. A standalone app needs neither line.
  turbopack: { root: __dirname },
  outputFileTracingRoot: __dirname,
  experimental: {
    // The tests build with several workers (NEXT_BUILD_CPUS=4) to prove that importing the
    // task modules in parallel build workers never opens the store.
    ...(process.env.NEXT_BUILD_CPUS ? { cpus: Number(process.env.NEXT_BUILD_CPUS) } : {}),
  },
};

// Adds 'durably' to serverExternalPackages: its native addon is loaded by Node, not bundled.
export default withDurably(nextConfig);
