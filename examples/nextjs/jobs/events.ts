// Event payloads by name: send(), `on` and waitForEvent() are typed from this.
export {};

declare module 'durably' {
  interface Events {
    'user/signed-up': { userId: string; email: string };
    'user/confirmed': { email: string };
  }
}
