# fairbot: build with `docker build -t fairbot .`,
# run with `docker run --env-file .env -v fairbot-data:/data fairbot`.
# The image holds no secret: configuration comes from the environment at run time.

# Node 24 (the active LTS) by default; 20 and 22 pass the test suite too:
# `docker build --build-arg NODE_VERSION=22 -t fairbot .`
ARG NODE_VERSION=24

# ---- build: dependencies (dev included), TypeScript build, then prune to production ----
FROM node:${NODE_VERSION}-bookworm-slim AS build
# better-sqlite3 compiles from source when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
# Dependencies first, in their own layer: a change to src/ does not reinstall them (nor
# recompile better-sqlite3). No scripts here (`prepare` would build a src/ not copied yet),
# then better-sqlite3's own install script, which fetches or compiles its native addon.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts \
 && npm rebuild better-sqlite3
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && test -f dist/main.js \
 && npm prune --omit=dev

# ---- runtime: only dist/, the production node_modules and package.json ----
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    DATA_DIR=/data \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Durable state (jobs, the GPU server the bot started) lives in /data, writable by `node` only.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node
# /metrics and /healthz (METRICS_PORT): on by default in the image, for the HEALTHCHECK below.
ENV METRICS_PORT=9464
# Slack HTTP mode listens on SLACK_PORT (default 3000); Discord and Socket Mode need no inbound port.
EXPOSE 3000 9464
# Healthy while the bot is connected to its chat platforms (/healthz answers 503 with the reason when not).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD node -e "const p=process.env.METRICS_PORT;if(!p)process.exit(0);fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"

# Exec form, node itself as PID 1: `docker stop`'s SIGTERM reaches the bot, which finishes
# the generation on the GPU, records the rest of the queue and exits 0 within 10 s.
# (`npm start` would put npm and a shell in between, and node would be SIGKILLed.)
# test/docker-cmd.test.ts runs this very command line and sends it SIGTERM.
CMD ["node", "dist/main.js"]
