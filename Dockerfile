# Builds the single sinal executable and ships it on a slim base.
FROM oven/bun:1.4.5 AS build
WORKDIR /src
COPY package.json package-lock.json bunfig.toml tsconfig.json ./
RUN bun install --frozen-lockfile
COPY src ./src
COPY drizzle ./drizzle
# Embedded at bundle time by src/http/assets.macro.ts: the demo page and the JS SDK (/client.js).
COPY web ./web
COPY clients/js/src ./clients/js/src
RUN bun build src/main.ts --compile --minify --sourcemap --outfile /out/sinal

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/sinal sinal && mkdir -p /var/lib/sinal && chown sinal /var/lib/sinal
COPY --from=build /out/sinal /usr/local/bin/sinal
USER sinal
WORKDIR /var/lib/sinal
ENV DATABASE_URL=sqlite:/var/lib/sinal/sinal.db PORT=3000
EXPOSE 3000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sinal"]
CMD ["serve"]
