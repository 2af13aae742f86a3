// mongodb-mock-server ships no types; the scripted server (scripted-mongo.ts) types what it uses.
declare module "mongodb-mock-server" {
  const mock: {
    createServer(port: number, host: string): Promise<unknown>;
    cleanup(): Promise<void>;
  };
  export default mock;
}
