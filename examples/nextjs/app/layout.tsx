import type { Metadata } from 'next';
import type { ReactNode } from 'react';

export const metadata: Metadata = {
  title: 'durably × Next.js',
  description: 'Durable background jobs inside the Next.js server',
};

const css = `
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1d1d1f; }
  nav a { margin-right: 1rem; }
  form { display: flex; gap: .5rem; margin: .5rem 0 1.5rem; }
  input { padding: .35rem .5rem; min-width: 18rem; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }
  code, pre { font: 12px ui-monospace, monospace; }
  .completed { color: #107c10; } .failed { color: #c50f1f; } .waiting, .delayed { color: #8a6d00; } .running, .queued { color: #0058a3; }
  .note { color: #555; }
`;

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <style>{css}</style>
        <nav>
          <a href="/">Sign up</a>
          <a href="/runs">Runs</a>
        </nav>
        {children}
      </body>
    </html>
  );
}
