# sinal as one executable on a small base. Build: docker build --build-arg SINAL_COMMIT=$(git rev-parse --short=12 HEAD) -t sinal .
# Run:   docker run -p 3000:3000 -v sinal-data:/data -e JWT_SECRET=... sinal
# (This image build has not been run on the machine that wrote it: no Docker engine there. The
# Dockerfile is linted with hadolint and the runtime stage's needs are tested in test/container.test.ts.)

FROM oven/bun:1.4.5 AS build
WORKDIR /src
COPY package.json package-lock.json bunfig.toml tsconfig.json ./
RUN bun install --frozen-lockfile --production
COPY src ./src
COPY drizzle ./drizzle
# Embedded at bundle time by src/http/assets.macro.ts: the demo page and the JS SDK (/client.js).
COPY web ./web
COPY clients/js/src ./clients/js/src
ARG SINAL_COMMIT=unknown
RUN SINAL_COMMIT=${SINAL_COMMIT} bun build src/main.ts --compile --bytecode --format=esm --minify --sourcemap --outfile /out/sinal \
 && mkdir -p /out/data

# glibc and nothing else: no shell, no package manager. The binary needs no other file.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sinal /usr/local/bin/sinal
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV DATABASE_URL=sqlite:/data/sinal.db \
    PORT=3000 \
    HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/sinal", "health"]
# exec form: sinal is PID 1 and gets SIGTERM itself (drains, exits 0 within 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sinal"]
CMD ["serve"]
