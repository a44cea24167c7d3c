import { defineConfig } from "vite";

// The built pages ship inside the Python package and are served by the market at /app/.
export default defineConfig({
  base: "/app/",
  build: {
    outDir: "../inferchain/marketplace/webui/static",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 1024,
  },
});
